//! Reading Hugging Face `config.json` files with errors that name the key: a missing or mistyped key
//! is reported as `config.json: key 'hidden_size' must be a positive integer, found "576"`.

use crate::error::{ModelError, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A JSON object from a config file, remembering where it came from (and the path of nested objects).
pub struct ConfigJson<'a> {
    pub file: PathBuf,
    pub prefix: String,
    pub map: &'a Map<String, Value>,
}

pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::config(path, format!("invalid JSON: {e}")))
}

impl<'a> ConfigJson<'a> {
    pub fn new(file: &Path, value: &'a Value) -> Result<ConfigJson<'a>> {
        let map = value.as_object().ok_or_else(|| ModelError::config(file, "expected a JSON object"))?;
        Ok(ConfigJson { file: file.to_path_buf(), prefix: String::new(), map })
    }

    fn key_name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub fn err(&self, msg: impl Into<String>) -> ModelError {
        ModelError::config(&self.file, msg)
    }

    /// A value that is present and not null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> ModelError {
        self.err(format!("key '{}' must be {want}, found {v}", self.key_name(key)))
    }

    fn missing(&self, key: &str) -> ModelError {
        self.err(format!("missing key '{}'", self.key_name(key)))
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.wrong(key, "a positive integer", v)),
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.wrong(key, "true or false", v)),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    pub fn str(&self, key: &str) -> Result<&'a str> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_object(&self, key: &str) -> Result<Option<ConfigJson<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => {
                Ok(Some(ConfigJson { file: self.file.clone(), prefix: format!("{}{key}.", self.prefix), map }))
            }
            Some(v) => Err(self.wrong(key, "an object", v)),
        }
    }

    /// Token ids given as one integer or a list (`eos_token_id`).
    pub fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|i| vec![i as u32])
                .ok_or_else(|| self.wrong(key, "a token id", &Value::Number(n.clone()))),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_u64().map(|i| i as u32).ok_or_else(|| self.wrong(key, "a list of token ids", v)))
                .collect(),
            Some(v) => Err(self.wrong(key, "a token id or a list of them", v)),
        }
    }

    /// A list of strings (`layer_types`).
    pub fn opt_strings(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| self.wrong(key, "a list of strings", v)))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(self.wrong(key, "a list of strings", v)),
        }
    }
}
