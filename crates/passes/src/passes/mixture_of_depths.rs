//! PLACEHOLDER — being written.
use crate::pass::{Pass, PassOptions};
pub fn create(_o: &PassOptions) -> Result<Box<dyn Pass>, String> { Err("mod: option 'routers' is required".into()) }
