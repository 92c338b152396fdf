//! PLACEHOLDER — being written.
use crate::pass::{Pass, PassOptions};
pub fn create(_o: &PassOptions) -> Result<Box<dyn Pass>, String> { Err("moe-dispatch: in progress".into()) }
