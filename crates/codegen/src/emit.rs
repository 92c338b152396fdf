//! From an LLVM module to bytes: verify, optimize with the new pass manager,
//! emit an object file (host) or PTX assembly (NVPTX) into memory.

use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::FileType;

use crate::error::{CodegenError, Result};
use crate::target::TargetInfo;

/// The optimization pipeline Kiln runs on every kernel module.
pub const DEFAULT_PIPELINE: &str = "default<O3>";

/// Points `module` at `target`: sets its triple and data layout. Call before
/// optimizing so that target-aware passes (vectorizer costs, NVVM reflect, ...)
/// see the real machine.
pub fn prepare_module(module: &Module<'_>, target: &TargetInfo) {
    module.set_triple(&target.llvm_triple());
    module.set_data_layout(&target.machine().get_target_data().get_data_layout());
}

fn module_name(module: &Module<'_>) -> String {
    module.get_name().to_string_lossy().into_owned()
}

/// Runs the LLVM verifier.
pub fn verify(module: &Module<'_>) -> Result<()> {
    module.verify().map_err(|e| CodegenError::Verify { module: module_name(module), message: e.to_string() })
}

/// Verifies `module`, prepares it for `target` and runs a new-pass-manager
/// `pipeline` on it (e.g. [`DEFAULT_PIPELINE`]).
pub fn optimize(module: &Module<'_>, target: &TargetInfo, pipeline: &str) -> Result<()> {
    verify(module)?;
    prepare_module(module, target);
    let options = PassBuilderOptions::create();
    options.set_verify_each(cfg!(debug_assertions));
    tracing::debug!(module = %module_name(module), pipeline, triple = %target.triple, "running LLVM passes");
    module
        .run_passes(pipeline, target.machine(), options)
        .map_err(|e| CodegenError::Passes { pipeline: pipeline.to_string(), message: e.to_string() })
}

fn emit(module: &Module<'_>, target: &TargetInfo, file_type: FileType) -> Result<Vec<u8>> {
    verify(module)?;
    prepare_module(module, target);
    let buffer = target
        .machine()
        .write_to_memory_buffer(module, file_type)
        .map_err(|e| CodegenError::Emit { triple: target.triple.clone(), message: e.to_string() })?;
    Ok(buffer.as_slice().to_vec())
}

/// Emits a relocatable object file (ELF on Linux) for `target`.
pub fn emit_object(module: &Module<'_>, target: &TargetInfo) -> Result<Vec<u8>> {
    emit(module, target, FileType::Object)
}

/// Emits textual assembly for `target`: PTX for NVPTX targets.
pub fn emit_assembly(module: &Module<'_>, target: &TargetInfo) -> Result<String> {
    let bytes = emit(module, target, FileType::Assembly)?;
    // LLVM's assembly printers write ASCII; keep any stray byte visible.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use inkwell::context::Context;
    use inkwell::module::Linkage;

    use super::*;
    use crate::target::{host_machine, nvptx_target};

    /// `float add_f32(float a, float b) { return a + b; }`
    fn add_f32_module(context: &Context) -> Module<'_> {
        let module = context.create_module("kiln_smoke");
        let f32_type = context.f32_type();
        let fn_type = f32_type.fn_type(&[f32_type.into(), f32_type.into()], false);
        let function = module.add_function("add_f32", fn_type, Some(Linkage::External));
        let builder = context.create_builder();
        builder.position_at_end(context.append_basic_block(function, "entry"));
        let a = function.get_nth_param(0).unwrap().into_float_value();
        let b = function.get_nth_param(1).unwrap().into_float_value();
        let sum = builder.build_float_add(a, b, "sum").unwrap();
        builder.build_return(Some(&sum)).unwrap();
        module
    }

    #[test]
    fn host_o3_object_contains_function() {
        let context = Context::create();
        let module = add_f32_module(&context);
        let host = host_machine().unwrap();
        optimize(&module, &host, DEFAULT_PIPELINE).unwrap();
        let ir = module.print_to_string().to_string();
        assert!(ir.contains("define float @add_f32(float"), "{ir}");
        assert!(ir.contains("fadd float"), "{ir}");

        let object = emit_object(&module, &host).unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(&object[..4], b"\x7fELF", "not an ELF object");
        }
        let has_symbol = object.windows(b"add_f32".len()).any(|w| w == b"add_f32");
        assert!(has_symbol, "symbol add_f32 missing from object");
    }

    #[test]
    fn nvptx_sm80_ptx_contains_function() {
        let context = Context::create();
        let module = add_f32_module(&context);
        let gpu = nvptx_target(80).unwrap();
        optimize(&module, &gpu, DEFAULT_PIPELINE).unwrap();
        let ptx = emit_assembly(&module, &gpu).unwrap();
        assert!(ptx.contains(".version 7.0"), "{ptx}");
        assert!(ptx.contains(".target sm_80"), "{ptx}");
        assert!(ptx.contains(".address_size 64"), "{ptx}");
        assert!(ptx.contains("add_f32("), "{ptx}");
        assert!(ptx.contains("add.rn.f32"), "{ptx}");
    }

    #[test]
    fn nvptx_sm90_ptx_targets_sm90() {
        let context = Context::create();
        let module = add_f32_module(&context);
        let gpu = nvptx_target(90).unwrap();
        optimize(&module, &gpu, DEFAULT_PIPELINE).unwrap();
        let ptx = emit_assembly(&module, &gpu).unwrap();
        assert!(ptx.contains(".version 7.8"), "{ptx}");
        assert!(ptx.contains(".target sm_90"), "{ptx}");
        assert!(ptx.contains("add_f32("), "{ptx}");
    }

    #[test]
    fn bad_pipeline_is_an_error() {
        let context = Context::create();
        let module = add_f32_module(&context);
        let host = host_machine().unwrap();
        let err = optimize(&module, &host, "no-such-pass").unwrap_err();
        assert!(matches!(err, CodegenError::Passes { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-pass"), "{err}");
    }

    #[test]
    fn invalid_module_fails_verification() {
        let context = Context::create();
        let module = context.create_module("broken");
        let fn_type = context.f32_type().fn_type(&[], false);
        let function = module.add_function("no_return", fn_type, None);
        // A block without a terminator is invalid IR.
        context.append_basic_block(function, "entry");
        let host = host_machine().unwrap();
        let err = emit_object(&module, &host).unwrap_err();
        assert!(matches!(err, CodegenError::Verify { .. }), "{err:?}");
    }
}
