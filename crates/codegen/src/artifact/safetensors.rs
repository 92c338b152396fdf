//! Writing `weights.safetensors` with every tensor 64-byte aligned (kernels load weights with wide
//! vector loads; the file is memory-mapped, so alignment in the file is alignment in memory).
//! safetensors allows no holes, so gaps are filled by `__pad.N` byte tensors.

use std::io::Write;

const ALIGN: usize = 64;

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
        let pad = at.next_multiple_of(ALIGN) - at;
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
    while (8 + header.len()) % ALIGN != 0 {
        header.push(' ');
    }
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    let zeros = [0u8; ALIGN];
    let mut pads = layout.into_iter();
    let mut at = 0usize;
    for (_, bytes, _) in tensors {
        if !at.is_multiple_of(ALIGN) {
            let pad = pads.next().unwrap_or(0);
            w.write_all(&zeros[..pad])?;
            at += pad;
        }
        w.write_all(bytes)?;
        at += bytes.len();
    }
    Ok(())
}
