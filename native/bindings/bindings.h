// Registration functions of the pybind11 adapter, one per concern (bind_*.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace edge_rt_bind {

void bind_system(pybind11::module_& m);       // ISA, version, build info
void bind_gguf(pybind11::module_& m);         // GGUFFile: metadata and tensor infos
void bind_kernels(pybind11::module_& m);      // row quantize/dequantize and dot products, for tests/tools
void bind_int_kernels(pybind11::module_& m);  // integer kernels of docs/integer_spec.md (int_gemm, ...)
void bind_engine(pybind11::module_& m);       // Engine: forward pass, logits
void bind_tokenizer(pybind11::module_& m);    // testing.CTokenizer: the C ABI's tokenizer, for parity tests

}  // namespace edge_rt_bind
