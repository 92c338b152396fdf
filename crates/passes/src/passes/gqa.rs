//! PLACEHOLDER — being written (gqa, expand-kv).
use crate::pass::{Pass, PassOptions};
pub fn create_gqa(_o: &PassOptions) -> Result<Box<dyn Pass>, String> { Err("gqa: option 'groups' is required".into()) }
pub fn create_expand_kv(_o: &PassOptions) -> Result<Box<dyn Pass>, String> { Err("expand-kv: in progress".into()) }
