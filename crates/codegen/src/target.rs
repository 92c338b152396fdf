//! LLVM targets Kiln generates code for: the host CPU and NVIDIA GPUs (NVPTX).
//!
//! LLVM's target registry is process-global; every entry point here initializes
//! what it needs exactly once, so callers never have to.

use std::fmt;
use std::sync::OnceLock;

use inkwell::targets::{CodeModel, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use inkwell::OptimizationLevel;
use serde::Serialize;

use crate::error::{CodegenError, Result};

/// The LLVM triple of the NVPTX backend (64-bit pointers, CUDA driver ABI).
pub const NVPTX_TRIPLE: &str = "nvptx64-nvidia-cuda";

/// NVIDIA compute capabilities Kiln emits PTX for (Ampere and newer: bf16,
/// `cp.async`, `mma.sync` for 16-bit types).
///
/// LLVM 19 knows processors up to `sm_90a`; the arch-specific `sm_90a` is not
/// offered because its PTX only loads on exactly sm_90 parts.
pub const SUPPORTED_SMS: &[u32] = &[80, 86, 87, 89, 90];

/// The oldest PTX ISA version that supports `sm`, as LLVM's feature number
/// (`70` = PTX 7.0, emitted as `+ptx70`). Using the oldest one keeps the PTX
/// loadable by the oldest driver that knows the GPU.
pub fn min_ptx_version(sm: u32) -> Option<u32> {
    match sm {
        80 => Some(70),
        86 => Some(71),
        87 => Some(74),
        89 | 90 => Some(78),
        _ => None,
    }
}

/// What LLVM says about the machine Kiln runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostTarget {
    /// Normalized target triple, e.g. `x86_64-pc-linux-gnu`.
    pub triple: String,
    /// LLVM's name for the host CPU, e.g. `znver3` or `skylake-avx512`.
    pub cpu: String,
    /// Comma-separated LLVM feature string for the host CPU (`+avx2,+fma,-tbm,...`).
    pub features: String,
    /// Version of the LLVM library Kiln is linked against, e.g. `19.1.4`.
    pub llvm_version: String,
}

impl HostTarget {
    /// Whether the host CPU has an LLVM feature (`"avx2"`, `"avx512f"`, ...).
    pub fn has_feature(&self, name: &str) -> bool {
        feature_enabled(&self.features, name)
    }
}

/// Whether an LLVM feature string (`+avx2,+fma,-tbm,...`) enables `name` (with or without `+`).
fn feature_enabled(features: &str, name: &str) -> bool {
    let name = name.trim_start_matches('+');
    features.split(',').any(|f| f.strip_prefix('+') == Some(name))
}

/// An LLVM target machine plus the description it was created from.
///
/// The fields describe the machine; [`TargetInfo::machine`] is what LLVM's
/// optimizer and code emitter take.
#[derive(Debug)]
pub struct TargetInfo {
    /// Target triple.
    pub triple: String,
    /// CPU (`sm_80` for NVPTX).
    pub cpu: String,
    /// Feature string the machine was created with (`+ptx70` for NVPTX).
    pub features: String,
    /// LLVM data layout string of the target.
    pub data_layout: String,
    /// The NVIDIA compute capability for NVPTX targets (`80` for sm_80).
    pub sm: Option<u32>,
    machine: TargetMachine,
}

impl TargetInfo {
    /// Whether the machine was created with an LLVM feature (`"avx512f"`, `"avx512vnni"`, ...).
    pub fn has_feature(&self, name: &str) -> bool {
        feature_enabled(&self.features, name)
    }

    /// The LLVM target machine.
    pub fn machine(&self) -> &TargetMachine {
        &self.machine
    }

    /// The triple as LLVM's type, for `Module::set_triple`.
    pub fn llvm_triple(&self) -> TargetTriple {
        TargetTriple::create(&self.triple)
    }
}

/// Version of the LLVM library in use (`major.minor.patch`).
pub fn llvm_version() -> String {
    let (major, minor, patch) = inkwell::support::get_llvm_version();
    format!("{major}.{minor}.{patch}")
}

fn init_config() -> InitializationConfig {
    InitializationConfig {
        asm_parser: true,
        asm_printer: true,
        base: true,
        disassembler: false,
        info: true,
        machine_code: true,
    }
}

fn init_native() -> Result<()> {
    static NATIVE: OnceLock<Result<(), String>> = OnceLock::new();
    NATIVE
        .get_or_init(|| Target::initialize_native(&init_config()))
        .clone()
        .map_err(|message| CodegenError::TargetInit { target: "native", message })
}

fn init_nvptx() {
    static NVPTX: OnceLock<()> = OnceLock::new();
    NVPTX.get_or_init(|| Target::initialize_nvptx(&init_config()));
}

fn target_for(triple: &TargetTriple) -> Result<Target> {
    Target::from_triple(triple)
        .map_err(|e| CodegenError::UnknownTriple { triple: triple.to_string(), message: e.to_string() })
}

fn host_triple() -> TargetTriple {
    TargetMachine::normalize_triple(&TargetMachine::get_default_triple())
}

/// Describes the host: LLVM triple, CPU name, CPU features and LLVM version.
///
/// Initializes LLVM's native target on first use and checks that LLVM can
/// actually generate code for it.
pub fn host_target() -> Result<HostTarget> {
    init_native()?;
    let triple = host_triple();
    target_for(&triple)?;
    Ok(HostTarget {
        triple: triple.as_str().to_string_lossy().into_owned(),
        cpu: TargetMachine::get_host_cpu_name().to_string(),
        features: TargetMachine::get_host_cpu_features().to_string(),
        llvm_version: llvm_version(),
    })
}

fn create_machine(triple: &str, cpu: &str, features: &str, reloc: RelocMode, sm: Option<u32>) -> Result<TargetInfo> {
    let llvm_triple = TargetTriple::create(triple);
    let target = target_for(&llvm_triple)?;
    let machine = target
        .create_target_machine(&llvm_triple, cpu, features, OptimizationLevel::Aggressive, reloc, CodeModel::Default)
        .ok_or_else(|| CodegenError::TargetMachine {
            triple: triple.to_string(),
            cpu: cpu.to_string(),
            features: features.to_string(),
        })?;
    let data_layout = machine.get_target_data().get_data_layout().as_str().to_string_lossy().into_owned();
    tracing::debug!(triple, cpu, "created LLVM target machine");
    Ok(TargetInfo {
        triple: triple.to_string(),
        cpu: cpu.to_string(),
        features: features.to_string(),
        data_layout,
        sm,
        machine,
    })
}

/// A target machine for the host CPU at `-O3`, position-independent (kernels
/// are linked into a shared library), tuned for exactly this CPU.
pub fn host_machine() -> Result<TargetInfo> {
    let host = host_target()?;
    create_machine(&host.triple, &host.cpu, &host.features, RelocMode::PIC, None)
}

/// x86-64 micro-architecture levels Kiln can compile for other than the host, with the LLVM
/// features each implies (the psABI levels; `x86-64-v4` is AVX-512 F/BW/CD/DQ/VL).
pub const X86_LEVELS: &[(&str, &str)] = &[
    ("x86-64", "+sse2"),
    ("x86-64-v2", "+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16"),
    ("x86-64-v3", "+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,+avx,+avx2,+bmi,+bmi2,+f16c,+fma,+lzcnt,+movbe"),
    (
        "x86-64-v4",
        "+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,+avx,+avx2,+bmi,+bmi2,+f16c,+fma,+lzcnt,+movbe,+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl",
    ),
];

/// A target machine for the host OS and architecture but another CPU: `native` (the host), or an
/// x86-64 level from [`X86_LEVELS`], so one artifact runs on every machine of that level.
pub fn cpu_machine(cpu: &str) -> Result<TargetInfo> {
    if cpu == "native" {
        return host_machine();
    }
    let host = host_target()?;
    let features = X86_LEVELS.iter().find(|(name, _)| *name == cpu).map(|(_, f)| *f).ok_or_else(|| {
        let names: Vec<&str> = X86_LEVELS.iter().map(|(n, _)| *n).collect();
        CodegenError::TargetMachine {
            triple: host.triple.clone(),
            cpu: format!("{cpu} (supported: native, {})", names.join(", ")),
            features: String::new(),
        }
    })?;
    if !host.triple.starts_with("x86_64") {
        return Err(CodegenError::TargetMachine {
            triple: host.triple,
            cpu: cpu.to_string(),
            features: features.into(),
        });
    }
    create_machine(&host.triple, cpu, features, RelocMode::PIC, None)
}

/// Whether this LLVM build can generate PTX (`nvptx64`). No GPU is needed.
pub fn nvptx_available() -> bool {
    init_nvptx();
    Target::from_name("nvptx64").is_some()
}

/// A target machine that emits PTX for `sm_{sm}` (e.g. `nvptx_target(90)`).
///
/// The PTX ISA version is the oldest one that supports the architecture (see
/// [`min_ptx_version`]). Errors for compute capabilities not in
/// [`SUPPORTED_SMS`].
pub fn nvptx_target(sm: u32) -> Result<TargetInfo> {
    let ptx = min_ptx_version(sm)
        .filter(|_| SUPPORTED_SMS.contains(&sm))
        .ok_or_else(|| CodegenError::UnsupportedSm { sm, supported: SUPPORTED_SMS.to_vec() })?;
    if !nvptx_available() {
        return Err(CodegenError::TargetInit {
            target: "nvptx",
            message: "this LLVM was built without the NVPTX backend".into(),
        });
    }
    create_machine(NVPTX_TRIPLE, &format!("sm_{sm}"), &format!("+ptx{ptx}"), RelocMode::Default, Some(sm))
}

/// What `kiln targets` prints: which machines this Kiln build can compile for.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// Version of the LLVM library in use.
    pub llvm_version: String,
    /// The host CPU target; `None` when LLVM cannot generate code for it
    /// (see `errors`).
    pub host: Option<HostTarget>,
    /// The NVIDIA GPU backend.
    pub nvptx: NvptxReport,
    /// Problems found while probing, one sentence each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The NVPTX part of a [`TargetReport`].
#[derive(Debug, Clone, Serialize)]
pub struct NvptxReport {
    /// Whether LLVM has the NVPTX backend.
    pub available: bool,
    /// The LLVM triple used for GPU code.
    pub triple: String,
    /// Compute capabilities Kiln emits PTX for and that LLVM accepted.
    pub supported_sms: Vec<u32>,
}

/// Probes LLVM for the host target and every supported NVPTX architecture.
///
/// Never fails: problems are collected in [`TargetReport::errors`].
pub fn describe_targets() -> TargetReport {
    let mut errors = Vec::new();
    let host = host_target().and_then(|host| host_machine().map(|_| host)).map_err(|e| errors.push(e.to_string())).ok();
    let available = nvptx_available();
    let supported_sms = if available {
        SUPPORTED_SMS
            .iter()
            .copied()
            .filter(|&sm| match nvptx_target(sm) {
                Ok(_) => true,
                Err(e) => {
                    errors.push(e.to_string());
                    false
                }
            })
            .collect()
    } else {
        errors.push("LLVM was built without the NVPTX backend: no CUDA code generation".into());
        Vec::new()
    };
    TargetReport {
        llvm_version: llvm_version(),
        host,
        nvptx: NvptxReport { available, triple: NVPTX_TRIPLE.to_string(), supported_sms },
        errors,
    }
}

impl fmt::Display for TargetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "LLVM {}", self.llvm_version)?;
        match &self.host {
            Some(host) => {
                writeln!(f, "host    {} (cpu {})", host.triple, host.cpu)?;
                let mut enabled: Vec<&str> =
                    host.features.split(',').filter_map(|feat| feat.strip_prefix('+')).collect();
                enabled.sort_unstable();
                writeln!(f, "        features: {}", enabled.join(" "))?;
            }
            None => writeln!(f, "host    unavailable")?,
        }
        if self.nvptx.available {
            let sms: Vec<String> = self.nvptx.supported_sms.iter().map(|sm| format!("sm_{sm}")).collect();
            writeln!(f, "nvptx   {} ({})", self.nvptx.triple, sms.join(", "))?;
        } else {
            writeln!(f, "nvptx   unavailable")?;
        }
        for error in &self.errors {
            writeln!(f, "error:  {error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_target_describes_this_machine() {
        let host = host_target().expect("LLVM must support the host");
        assert!(
            host.triple.starts_with(std::env::consts::ARCH),
            "triple {} does not match arch {}",
            host.triple,
            std::env::consts::ARCH
        );
        assert!(host.triple.contains(std::env::consts::OS), "{}", host.triple);
        assert!(!host.cpu.is_empty());
        assert!(
            host.features.split(',').all(|f| f.starts_with(['+', '-'])),
            "malformed feature string {}",
            host.features
        );
        if cfg!(target_arch = "x86_64") {
            // Every x86-64 CPU has SSE2; LLVM must say so.
            assert!(host.has_feature("sse2"), "{}", host.features);
        }
        assert!(host.llvm_version.starts_with("19."), "{}", host.llvm_version);
        // Idempotent: a second call initializes nothing and agrees.
        assert_eq!(host_target().unwrap(), host);
    }

    #[test]
    fn host_machine_uses_host_cpu() {
        let host = host_target().unwrap();
        let info = host_machine().unwrap();
        assert_eq!(info.triple, host.triple);
        assert_eq!(info.machine().get_cpu().to_string(), host.cpu);
        assert!(!info.data_layout.is_empty());
        assert_eq!(info.sm, None);
    }

    #[test]
    fn nvptx_machines_for_supported_sms() {
        assert!(nvptx_available());
        for &sm in SUPPORTED_SMS {
            let info = nvptx_target(sm).unwrap();
            assert_eq!(info.triple, NVPTX_TRIPLE);
            assert_eq!(info.cpu, format!("sm_{sm}"));
            assert_eq!(info.machine().get_cpu().to_string(), info.cpu);
            assert_eq!(info.sm, Some(sm));
            // nvptx64: 64-bit pointers.
            assert!(info.data_layout.starts_with("e-"), "{}", info.data_layout);
            assert!(!info.data_layout.contains("p:32"), "{}", info.data_layout);
        }
        assert_eq!(nvptx_target(80).unwrap().features, "+ptx70");
        assert_eq!(nvptx_target(90).unwrap().features, "+ptx78");
    }

    #[test]
    fn unsupported_sm_lists_supported_ones() {
        for sm in [0, 75, 91, 100, 120] {
            let err = nvptx_target(sm).unwrap_err();
            assert!(matches!(err, CodegenError::UnsupportedSm { sm: s, .. } if s == sm), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("sm_{sm}")), "{msg}");
            assert!(msg.contains("sm_80, sm_86, sm_87, sm_89, sm_90"), "{msg}");
        }
    }

    #[test]
    fn report_covers_host_and_gpu() {
        let report = describe_targets();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.host.is_some());
        assert_eq!(report.nvptx.supported_sms, SUPPORTED_SMS);

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["nvptx"]["triple"], NVPTX_TRIPLE);
        assert_eq!(json["nvptx"]["supported_sms"][0], 80);
        assert!(json["host"]["triple"].is_string());
        assert!(json["llvm_version"].as_str().unwrap().starts_with("19."));
        assert!(json.get("errors").is_none(), "empty errors are omitted");

        let text = report.to_string();
        assert!(text.starts_with("LLVM 19."), "{text}");
        assert!(text.contains("sm_80, sm_86, sm_87, sm_89, sm_90"), "{text}");
    }
}
