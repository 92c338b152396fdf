//! Writing `weights.safetensors` with every tensor of at least 4 KiB page-aligned and every other
//! one 64-byte aligned (`kiln_runtime::aligned::alignment_for`, the rule the CPU executor's
//! activations follow too). The file is memory-mapped (or copied whole onto huge pages), so alignment
//! in the file is alignment in memory: kernels load weights with wide vector loads, and the
//! interleaved f32 GEMV reads its one sequential stream at 16–17 GB/s from a page-aligned matrix
//! but 14 GB/s from one starting 192 or 2496 bytes into a page (`benches/gemv.rs` with `KILN_BENCH_OFFSET`).
//! safetensors allows no holes, so gaps are filled by `__pad.N` byte tensors.

use std::io::Write;

use kiln_runtime::aligned::{alignment_for, PAGE};

/// Writes `tensors` (name, raw bytes, dtype string `U8`/`F32`) to `w`.
pub fn write(
    w: &mut dyn Write,
    tensors: &[(String, Vec<u8>, &str)],
    metadata: &[(String, String)],
) -> std::io::Result<()> {
    let mut entries = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        entries.insert("__metadata__".into(), meta.into());
    }
    let mut layout = Vec::new();
    let mut at = 0usize;
    for (i, (name, bytes, dtype)) in tensors.iter().enumerate() {
        let pad = at.next_multiple_of(alignment_for(bytes.len())) - at;
        if pad > 0 {
            let pname = format!("__pad.{i}");
            entries.insert(pname, serde_json::json!({"dtype": "U8", "shape": [pad], "data_offsets": [at, at + pad]}));
            layout.push(pad);
            at += pad;
        }
        let elem = if *dtype == "F32" { 4 } else { 1 };
        entries.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": [bytes.len() / elem], "data_offsets": [at, at + bytes.len()]}),
        );
        at += bytes.len();
    }
    let mut header = serde_json::to_string(&entries).map_err(std::io::Error::other)?;
    let padded = (8 + header.len()).next_multiple_of(PAGE) - 8;
    header.extend(std::iter::repeat_n(' ', padded - header.len()));
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    let zeros = [0u8; PAGE];
    let mut pads = layout.into_iter();
    let mut at = 0usize;
    for (_, bytes, _) in tensors {
        if !at.is_multiple_of(alignment_for(bytes.len())) {
            let pad = pads.next().unwrap_or(0);
            w.write_all(&zeros[..pad])?;
            at += pad;
        }
        w.write_all(bytes)?;
        at += bytes.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tensors_start_on_pages_and_small_ones_on_lines() {
        let tensors: Vec<(String, Vec<u8>, &str)> =
            [(100, "U8"), (5000, "U8"), (2304, "F32"), (40960, "F32"), (7, "U8")]
                .iter()
                .enumerate()
                .map(|(i, &(len, dtype))| (format!("t{i}"), (0..len).map(|b| (b * 7 + i) as u8).collect(), dtype))
                .collect();
        let mut file = Vec::new();
        write(&mut file, &tensors, &[("k".into(), "v".into())]).unwrap();
        let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let data = 8 + header_len;
        assert_eq!(data % PAGE, 0, "the data section starts on a page");
        let header: serde_json::Value = serde_json::from_slice(&file[8..data]).unwrap();
        for (name, bytes, _) in &tensors {
            let offsets = &header[name]["data_offsets"];
            let (begin, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
            let align = if bytes.len() >= 4096 { 4096 } else { 64 };
            assert_eq!((data + begin) % align, 0, "{name} ({} bytes) at {begin}", bytes.len());
            assert_eq!(&file[data + begin..data + end], &bytes[..], "{name}'s bytes");
        }
    }
}
