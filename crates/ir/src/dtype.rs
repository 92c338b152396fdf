//! Element types. Plain scalar types plus block-quantized weight formats (GGML-style blocks), which
//! only weights (`param`) may carry: compute ops see them through `matmul` and `embedding`, which
//! dequantize on the fly.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    I64,
    Bool,
    /// Block-quantized weights; the tensor's shape counts elements, not blocks.
    Quant(QuantFormat),
}

/// Block-quantized formats, named as llama.cpp names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantFormat {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
}

impl QuantFormat {
    pub const ALL: [QuantFormat; 8] = [
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q5_1,
        QuantFormat::Q4K,
        QuantFormat::Q5K,
        QuantFormat::Q6K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Q4_1 => "q4_1",
            QuantFormat::Q5_0 => "q5_0",
            QuantFormat::Q5_1 => "q5_1",
            QuantFormat::Q4K => "q4_k",
            QuantFormat::Q5K => "q5_k",
            QuantFormat::Q6K => "q6_k",
        }
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            QuantFormat::Q8_0 | QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q5_0 | QuantFormat::Q5_1 => 32,
            QuantFormat::Q4K | QuantFormat::Q5K | QuantFormat::Q6K => 256,
        }
    }

    /// Bytes per block (ggml's block structs).
    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q4_0 => 18,
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q5_0 => 22,
            QuantFormat::Q5_1 => 24,
            QuantFormat::Q4K => 144,
            QuantFormat::Q5K => 176,
            QuantFormat::Q6K => 210,
        }
    }
}

impl DType {
    pub const SCALARS: [DType; 6] = [DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64, DType::Bool];

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
            DType::Quant(q) => q.name(),
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::I32 | DType::I64)
    }

    pub fn is_quant(self) -> bool {
        matches!(self, DType::Quant(_))
    }

    /// Bytes needed for `elems` elements, or `None` when a quantized tensor's element count is not
    /// a whole number of blocks.
    pub fn storage_bytes(self, elems: usize) -> Option<usize> {
        match self {
            DType::F32 | DType::I32 => Some(elems * 4),
            DType::F16 | DType::BF16 => Some(elems * 2),
            DType::I64 => Some(elems * 8),
            DType::Bool => Some(elems),
            DType::Quant(q) => elems.is_multiple_of(q.block_elems()).then(|| elems / q.block_elems() * q.block_bytes()),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(d) = DType::SCALARS.iter().find(|d| d.name() == s) {
            return Ok(*d);
        }
        if let Some(q) = QuantFormat::ALL.iter().find(|q| q.name() == s) {
            return Ok(DType::Quant(*q));
        }
        let all: Vec<&str> =
            DType::SCALARS.iter().map(|d| d.name()).chain(QuantFormat::ALL.iter().map(|q| q.name())).collect();
        Err(format!("unknown dtype '{s}' (expected one of: {})", all.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::SCALARS.iter().copied().chain(QuantFormat::ALL.iter().map(|q| DType::Quant(*q))) {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert!("f31".parse::<DType>().unwrap_err().contains("unknown dtype 'f31'"));
    }

    #[test]
    fn quant_storage() {
        assert_eq!(DType::Quant(QuantFormat::Q4_1).storage_bytes(64), Some(40));
        assert_eq!(DType::Quant(QuantFormat::Q6K).storage_bytes(100), None);
        assert_eq!(DType::BF16.storage_bytes(3), Some(6));
    }
}
