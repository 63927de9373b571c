// pybind11 adapter for ISA queries and the row kernels (for tests and tools, not the hot path).
//
// Weight rows and encoded activations cross the boundary as bytes (or any C-contiguous uint8 buffer,
// e.g. a numpy uint8 array); floats as float32 numpy arrays. Every size is checked here, before a
// kernel reads a byte, and reported as edge_rt::Error(InvalidArgument) -> edge_rt.InvalidArgumentError.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <pybind11/pybind11.h>

#include <cctype>
#include <cstring>
#include <string>
#include <vector>

#include "bindings.h"
#include "edge_rt/cpu_features.h"
#include "edge_rt/error.h"
#include "edge_rt/ggml_types.h"
#include "edge_rt/kernel_rate.h"
#include "edge_rt/kernels.h"

namespace py = pybind11;

namespace edge_rt_bind {

namespace {

using edge_rt::ErrorKind;
using edge_rt::GgmlType;
using edge_rt::Isa;

constexpr Isa kAllIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDotprod, Isa::NeonI8mm};

Isa parse_isa(const std::string& op, const std::string& name) {
    for (Isa i : kAllIsas)
        if (name == edge_rt::isa_name(i)) return i;
    edge_rt::fail(ErrorKind::InvalidArgument,
                  "[" + op + "] unknown ISA '" + name + "' (expected scalar, avx2 or avx512vnni)");
}

// Compute type by ggml name ("Q4_K", case-sensitive as in GGUF tooling; lower case accepted too).
GgmlType parse_compute_type(const std::string& op, const std::string& name) {
    std::string upper = name;
    for (char& c : upper) c = (char)std::toupper((unsigned char)c);
    for (uint32_t id = 0; id < 64; ++id) {
        const edge_rt::TypeTraits* t = edge_rt::type_traits(id);
        if (t == nullptr || upper != t->name) continue;
        const GgmlType type = (GgmlType)id;
        if (!edge_rt::is_compute_type(type))
            edge_rt::fail(ErrorKind::InvalidArgument, "[" + op + "] type " + name + " has no compute kernels");
        return type;
    }
    edge_rt::fail(ErrorKind::InvalidArgument, "[" + op + "] unknown type name '" + name + "'");
}

struct ByteView {
    const uint8_t* data;
    size_t size;
    py::buffer_info info;  // keeps the exporter's buffer alive
};

ByteView byte_view(const std::string& op, const py::buffer& buf) {
    py::buffer_info info = buf.request();
    if (info.itemsize != 1)
        edge_rt::fail(ErrorKind::InvalidArgument, "[" + op + "] weight data must be bytes or a uint8 array (itemsize " +
                                                      std::to_string(info.itemsize) + ")");
    py::ssize_t expect = 1;
    for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
        if (info.shape[d] != 1 && info.strides[d] != expect)
            edge_rt::fail(ErrorKind::InvalidArgument, "[" + op + "] weight data must be C-contiguous");
        expect *= info.shape[d];
    }
    ByteView v{static_cast<const uint8_t*>(info.ptr), (size_t)info.size, std::move(info)};
    return v;
}

const edge_rt::WeightKernels& kernels_for(const std::string& op, GgmlType type, Isa isa) {
    const edge_rt::WeightKernels* k = edge_rt::weight_kernels(type, isa);
    if (k == nullptr)
        edge_rt::fail(ErrorKind::InvalidArgument,
                      std::string("[") + op + "] no kernels for " + edge_rt::type_name(type));
    return *k;
}

size_t weight_row_bytes(const std::string& op, GgmlType type, int64_t n) {
    const edge_rt::TypeTraits& t = edge_rt::type_traits(type);
    if (n <= 0 || n % t.block_elems != 0)
        edge_rt::fail(ErrorKind::InvalidArgument, "[" + op + "] n=" + std::to_string(n) +
                                                      " must be a positive multiple of " +
                                                      std::to_string(t.block_elems) + " for " + t.name);
    return (size_t)(n / t.block_elems * t.block_bytes);
}

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

}  // namespace

void bind_system(py::module_& m) {
    m.def(
        "isa", [] { return std::string(edge_rt::isa_name(edge_rt::active_isa())); },
        "ISA whose kernels run (best compiled+supported, lowered by EDGE_RT_ISA).");
    m.def(
        "best_isa", [] { return std::string(edge_rt::isa_name(edge_rt::best_isa())); },
        "Highest ISA both compiled in and supported by this CPU.");
    m.def(
        "vec_ops_flavour", [] { return std::string(edge_rt::vec_ops_flavour_name(edge_rt::vec_ops_flavour())); },
        "Which llama.cpp x86 build's float vector arithmetic runs: 'avx2' or 'avx512' (kernels.h GgmlVecOps; "
        "the native build's for this CPU unless EDGE_RT_VEC_OPS names one).");
    m.def(
        "cpu_supports", [](const std::string& name) { return edge_rt::cpu_supports(parse_isa("cpu_supports", name)); },
        py::arg("name"), "Whether the CPU and OS support the ISA, regardless of the build.");
    m.def(
        "compiled_isas",
        [] {
            py::list v;
            for (Isa i : kAllIsas)
                if (edge_rt::isa_compiled(i)) v.append(edge_rt::isa_name(i));
            return v;
        },
        "ISAs whose kernels were built into this module.");
}

void bind_kernels(py::module_& m) {
    m.def(
        "dequantize_row",
        [](const std::string& type_name, const py::buffer& data, int64_t n) {
            const std::string op = "dequantize_row";
            const GgmlType type = parse_compute_type(op, type_name);
            const size_t need = weight_row_bytes(op, type, n);
            ByteView w = byte_view(op, data);
            if (w.size != need)
                edge_rt::fail(ErrorKind::InvalidArgument,
                              "[" + op + "] " + type_name + " row of n=" + std::to_string(n) + " needs " +
                                  std::to_string(need) + " bytes, got " + std::to_string(w.size));
            py::array_t<float> out((py::ssize_t)n);
            const edge_rt::WeightKernels& k = kernels_for(op, type, edge_rt::active_isa());
            float* dst = out.mutable_data();
            {
                py::gil_scoped_release nogil;
                k.dequantize_row(w.data, dst, n);
            }
            return out;
        },
        py::arg("type_name"), py::arg("data"), py::arg("n"),
        "Dequantize one weight row of n elements (bytes in the type's GGUF block layout) to float32.");

    m.def(
        "quantize_act",
        [](const std::string& type_name, const FloatArray& x) {
            const std::string op = "quantize_act";
            const GgmlType type = parse_compute_type(op, type_name);
            const edge_rt::WeightKernels& k = kernels_for(op, type, edge_rt::active_isa());
            const int64_t n = (int64_t)x.size();
            if (x.ndim() != 1 || n <= 0 || n % k.act_block_elems != 0)
                edge_rt::fail(ErrorKind::InvalidArgument,
                              "[" + op + "] x must be a non-empty 1-D float32 array whose length is a multiple of " +
                                  std::to_string(k.act_block_elems) + " (" + type_name + " activations are " +
                                  edge_rt::type_name(k.act_type) + "), got length " + std::to_string(n));
            std::string out(k.act_row_bytes(n), '\0');
            k.quantize_act(x.data(), &out[0], n);
            return py::bytes(out);
        },
        py::arg("type_name"), py::arg("x"),
        "Encode float32 activations in the activation format paired with weight type type_name.");

    m.def(
        "vec_dot",
        [](const std::string& type_name, const py::buffer& w_bytes, const FloatArray& x, py::object isa_name) {
            const std::string op = "vec_dot";
            const GgmlType type = parse_compute_type(op, type_name);
            Isa isa = edge_rt::active_isa();
            if (!isa_name.is_none()) {
                isa = parse_isa(op, py::cast<std::string>(isa_name));
                if (!edge_rt::isa_compiled(isa) || !edge_rt::cpu_supports(isa))
                    edge_rt::fail(ErrorKind::InvalidArgument,
                                  "[" + op + "] ISA " + py::cast<std::string>(isa_name) +
                                      " is not available (compiled: " + (edge_rt::isa_compiled(isa) ? "yes" : "no") +
                                      ", CPU: " + (edge_rt::cpu_supports(isa) ? "yes" : "no") + ")");
            }
            const edge_rt::WeightKernels& k = kernels_for(op, type, isa);
            const int64_t n = (int64_t)x.size();
            if (x.ndim() != 1) edge_rt::fail(ErrorKind::InvalidArgument, "[" + op + "] x must be a 1-D float32 array");
            const size_t need = weight_row_bytes(op, type, n);
            if (n % k.act_block_elems != 0)
                edge_rt::fail(ErrorKind::InvalidArgument, "[" + op + "] n=" + std::to_string(n) +
                                                              " must be a multiple of " +
                                                              std::to_string(k.act_block_elems));
            ByteView w = byte_view(op, w_bytes);
            if (w.size != need)
                edge_rt::fail(ErrorKind::InvalidArgument,
                              "[" + op + "] " + type_name + " row of n=" + std::to_string(n) + " needs " +
                                  std::to_string(need) + " bytes, got " + std::to_string(w.size));
            std::vector<uint8_t> act(k.act_row_bytes(n));
            const float* xp = x.data();
            float result;
            {
                py::gil_scoped_release nogil;
                k.quantize_act(xp, act.data(), n);
                result = k.vec_dot(n, w.data, act.data());
            }
            return result;
        },
        py::arg("type_name"), py::arg("w_bytes"), py::arg("x"), py::arg("isa") = py::none(),
        "Quantize x to the type's activation format, then dot it with one weight row (optionally on a given ISA).");

    m.def(
        "kernel_rate",
        [](const std::string& type_name, const std::string& isa_name, double min_seconds, uint64_t matrix_bytes) {
            const std::string op = "kernel_rate";
            const GgmlType type = parse_compute_type(op, type_name);
            const Isa isa = parse_isa(op, isa_name);
            if (!(min_seconds > 0) || min_seconds > 60)
                edge_rt::fail(ErrorKind::InvalidArgument, "[" + op + "] min_seconds must be in (0, 60]");
            edge_rt::KernelRate r;
            {
                py::gil_scoped_release nogil;
                r = edge_rt::measure_kernel_rate(type, isa, min_seconds, matrix_bytes);
            }
            py::dict d;
            d["decode_per_s"] = r.decode_per_s;
            d["prefill_per_s"] = r.prefill_per_s;
            d["repack_bytes_per_s"] = r.repack_bytes_per_s;
            d["rows"] = r.rows;
            d["cols"] = r.cols;
            d["decode_kernel"] = r.decode_kernel;
            d["prefill_kernel"] = r.prefill_kernel;
            return d;
        },
        py::arg("type_name"), py::arg("isa"), py::arg("min_seconds") = 0.05,
        py::arg("matrix_bytes") = edge_rt::kRateMatrixBytes,
        "Single-thread weight elements per second of the type's matmul kernels on the ISA "
        "(native/include/edge_rt/kernel_rate.h): decode (one activation row) and prefill (8 rows; 0 unless the "
        "matrix fits RATE_MATRIX_BYTES), on a matrix of about matrix_bytes: RATE_MATRIX_BYTES stays in L2 "
        "(arithmetic), RATE_RAM_MATRIX_BYTES streams from RAM.");
    m.attr("RATE_MATRIX_BYTES") = edge_rt::kRateMatrixBytes;
    m.attr("RATE_RAM_MATRIX_BYTES") = edge_rt::kRateRamMatrixBytes;
}

}  // namespace edge_rt_bind
