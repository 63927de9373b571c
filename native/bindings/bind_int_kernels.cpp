// pybind11 adapter for the integer kernels (edge_rt/int_kernels.h), over NumPy arrays of codes.
//
// Codes cross as C-contiguous numpy arrays of exactly the dtype their width names (uint8 / uint16
// activations, int8 weight codes or uint8 packed int4 weights, uint32 exp tables): nothing is converted
// silently. Encodings are (scale, zero_point, bits) tuples. `isa` None runs the active ISA (EDGE_RT_ISA
// applied); a named ISA must be compiled in and supported by the CPU. Every check fails as
// edge_rt::Error(InvalidArgument) -> edge_rt.InvalidArgumentError. The GIL is released around the kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>
#include <vector>

#include "bindings.h"
#include "edge_rt/cpu_features.h"
#include "edge_rt/error.h"
#include "edge_rt/int_kernels.h"

namespace py = pybind11;

namespace edge_rt_bind {

namespace {

using edge_rt::ErrorKind;
using edge_rt::Isa;
using edge_rt::QuantEncoding;
using Enc = std::tuple<double, int64_t, int>;

[[noreturn]] void bad(const std::string& op, const std::string& what) {
    edge_rt::fail(ErrorKind::InvalidArgument, "[int_kernels] " + op + ": " + what);
}

QuantEncoding encoding(const Enc& e) { return {std::get<0>(e), std::get<1>(e), std::get<2>(e)}; }

Isa pick_isa(const std::string& op, const py::object& name) {
    if (name.is_none()) return edge_rt::active_isa();
    const std::string s = py::cast<std::string>(name);
    for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDotprod, Isa::NeonI8mm})
        if (s == edge_rt::isa_name(i)) {
            if (!edge_rt::isa_compiled(i) || !edge_rt::cpu_supports(i)) bad(op, "ISA " + s + " is not available here");
            return i;
        }
    bad(op, "unknown ISA '" + s + "'");
}

// Whether arr's dtype is T's exactly: native byte order and T's type number. Not dtype identity: an
// unpickled array's dtype is an equal but distinct object.
template <class T>
bool has_dtype(const py::array& arr) {
    return py::isinstance<py::array_t<T>>(arr) && py::dtype::of<T>().num() == arr.dtype().num();
}

// A C-contiguous array of dtype T (exactly), or an error naming the argument.
template <class T>
py::array_t<T> exact(const std::string& op, const char* name, const py::array& arr) {
    if (!has_dtype<T>(arr))
        bad(op, std::string(name) + " must be a numpy array of " + std::string(py::str(py::dtype::of<T>())) + ", got " +
                    std::string(py::str(arr.dtype())));
    if (!(arr.flags() & py::array::c_style)) bad(op, std::string(name) + " must be C-contiguous");
    return py::reinterpret_borrow<py::array_t<T>>(arr);
}

// Activation codes of `bits` (uint8 or uint16): data pointer, checked.
const void* codes(const std::string& op, const char* name, const py::array& arr, int bits) {
    if (bits == 16) return exact<uint16_t>(op, name, arr).data();
    if (bits == 8) return exact<uint8_t>(op, name, arr).data();
    bad(op, std::string(name) + " bits must be 8 or 16");
}

py::array new_codes(int bits, const std::vector<py::ssize_t>& shape) {
    if (bits == 16) return py::array_t<uint16_t>(shape);
    if (bits == 8) return py::array_t<uint8_t>(shape);
    bad("int_kernels", "output bits must be 8 or 16");
}

int64_t last_dim(const std::string& op, const py::array& a) {
    if (a.ndim() < 1 || a.size() == 0) bad(op, "input must be a non-empty array");
    return (int64_t)a.shape(a.ndim() - 1);
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

}  // namespace

void bind_int_kernels(py::module_& m) {
    m.def(
        "int_fixed_multiplier",
        [](double real, int precision) {
            const edge_rt::FixedMultiplier f = edge_rt::fixed_multiplier(real, precision);
            return std::make_tuple(f.m, f.s);
        },
        py::arg("real"), py::arg("precision"), "(m, s) with real ~= m * 2^-s, m of `precision` bits (integer spec).");
    m.def(
        "int_precision_for", [](uint64_t bound) { return edge_rt::precision_for(bound); }, py::arg("acc_bound"),
        "Multiplier bits for an accumulator bound (integer spec).");

    m.def(
        "int_gemm",
        [](const py::array& a, const Enc& ea, const py::array& w, int w_bits, const py::array& s_w, const Enc& ey,
           const py::object& isa_name) {
            const std::string op = "gemm";
            const QuantEncoding A = encoding(ea), Y = encoding(ey);
            const void* ap = codes(op, "a", a, A.bits);
            if (a.ndim() != 2 || w.ndim() != 2) bad(op, "a (M, K) and w must be 2-D");
            const int64_t M = a.shape(0), K = a.shape(1), N = w.shape(0);
            const bool packed = has_dtype<uint8_t>(w);
            const void* wp = packed ? (const void*)exact<uint8_t>(op, "w", w).data() : exact<int8_t>(op, "w", w).data();
            if (w.shape(1) != (packed ? (K + 1) / 2 : K))
                bad(op, std::string("w must be (N, ") + (packed ? "(K + 1) / 2) packed int4 bytes" : "K) int8 codes") +
                            " with K = " + std::to_string(K) + ", got width " + std::to_string(w.shape(1)));
            if (packed && w_bits != 4) bad(op, "packed int4 weights need w_bits 4");
            py::array_t<float> sw = exact<float>(op, "s_w", s_w);
            if (sw.ndim() != 1 || sw.shape(0) != N) bad(op, "s_w must be (N,) float32");
            const Isa isa = pick_isa(op, isa_name);
            py::array y = new_codes(Y.bits, {(py::ssize_t)M, (py::ssize_t)N});
            void* yp = y.mutable_data();
            {
                py::gil_scoped_release nogil;
                edge_rt::int_gemm(ap, A, wp, packed ? edge_rt::CodeType::I4 : edge_rt::CodeType::I8, w_bits, sw.data(),
                                  M, N, K, Y, yp, isa);
            }
            return y;
        },
        py::arg("a"), py::arg("ea"), py::arg("w"), py::arg("w_bits"), py::arg("s_w"), py::arg("ey"),
        py::arg("isa") = py::none(),
        "Projection GEMM: codes (M, N) of a (M, K) . w^T; w (N, K) int8 codes or (N, (K+1)/2) packed int4.");

    m.def(
        "int_matmul",
        [](const py::array& a, const Enc& ea, const py::array& b, const Enc& eb, const Enc& ey,
           const py::object& isa_name) {
            const std::string op = "matmul";
            const QuantEncoding A = encoding(ea), B = encoding(eb), Y = encoding(ey);
            const void* ap = codes(op, "a", a, A.bits);
            const void* bp = codes(op, "b", b, B.bits);
            if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(1))
                bad(op, "a (M, K) and b (N, K) must be 2-D");
            const int64_t M = a.shape(0), N = b.shape(0), K = a.shape(1);
            const Isa isa = pick_isa(op, isa_name);
            py::array y = new_codes(Y.bits, {(py::ssize_t)M, (py::ssize_t)N});
            void* yp = y.mutable_data();
            {
                py::gil_scoped_release nogil;
                edge_rt::int_matmul(ap, A, bp, B, M, N, K, Y, yp, isa);
            }
            return y;
        },
        py::arg("a"), py::arg("ea"), py::arg("b"), py::arg("eb"), py::arg("ey"), py::arg("isa") = py::none(),
        "MatMul of two activations: codes (M, N) of a (M, K) . b (N, K)^T.");

    for (const char* name : {"int_add", "int_mul"}) {
        const bool is_add = std::string(name) == "int_add";
        m.def(
            name,
            [is_add](const py::array& a, const Enc& ea, const py::array& b, const Enc& eb, const Enc& ey,
                     const py::object& isa_name) {
                const std::string op = is_add ? "add" : "mul";
                const QuantEncoding A = encoding(ea), B = encoding(eb), Y = encoding(ey);
                const void* ap = codes(op, "a", a, A.bits);
                const void* bp = codes(op, "b", b, B.bits);
                if (shape_of(a) != shape_of(b)) bad(op, "a and b must have one shape (broadcast them first)");
                last_dim(op, a);
                const Isa isa = pick_isa(op, isa_name);
                py::array y = new_codes(Y.bits, shape_of(a));
                void* yp = y.mutable_data();
                const int64_t n = a.size();
                {
                    py::gil_scoped_release nogil;
                    if (is_add)
                        edge_rt::int_add(ap, A, bp, B, n, Y, yp, isa);
                    else
                        edge_rt::int_mul(ap, A, bp, B, n, Y, yp, isa);
                }
                return y;
            },
            py::arg("a"), py::arg("ea"), py::arg("b"), py::arg("eb"), py::arg("ey"), py::arg("isa") = py::none(),
            is_add ? "Elementwise Add of two code arrays of one shape."
                   : "Elementwise Mul of two code arrays of one shape.");
    }

    m.def(
        "int_requantize",
        [](const py::array& a, const Enc& ea, const Enc& ey, const py::object& isa_name) {
            const std::string op = "requantize";
            const QuantEncoding A = encoding(ea), Y = encoding(ey);
            const void* ap = codes(op, "a", a, A.bits);
            last_dim(op, a);
            const Isa isa = pick_isa(op, isa_name);
            py::array y = new_codes(Y.bits, shape_of(a));
            void* yp = y.mutable_data();
            const int64_t n = a.size();
            {
                py::gil_scoped_release nogil;
                edge_rt::int_requantize(ap, A, n, Y, yp, isa);
            }
            return y;
        },
        py::arg("a"), py::arg("ea"), py::arg("ey"), py::arg("isa") = py::none(), "Codes of a in another encoding.");

    m.def(
        "int_rmsnorm",
        [](const py::array& a, const Enc& ea, const py::array& g, const Enc& eg, double eps, const Enc& ey,
           const py::object& isa_name) {
            const std::string op = "rmsnorm";
            const QuantEncoding A = encoding(ea), G = encoding(eg), Y = encoding(ey);
            const void* ap = codes(op, "a", a, A.bits);
            const int64_t D = last_dim(op, a);
            py::array_t<uint16_t> gv = exact<uint16_t>(op, "g", g);
            if (gv.ndim() != 1 || gv.shape(0) != D) bad(op, "g must be (D,) uint16 codes, D = a's last dimension");
            const Isa isa = pick_isa(op, isa_name);
            py::array y = new_codes(Y.bits, shape_of(a));
            void* yp = y.mutable_data();
            const int64_t rows = a.size() / D;
            {
                py::gil_scoped_release nogil;
                edge_rt::int_rmsnorm(ap, A, gv.data(), G, eps, rows, D, Y, yp, isa);
            }
            return y;
        },
        py::arg("a"), py::arg("ea"), py::arg("g"), py::arg("eg"), py::arg("eps"), py::arg("ey"),
        py::arg("isa") = py::none(), "RMSNorm over the last axis with 16-bit weight codes g.");

    m.def(
        "int_softmax",
        [](const py::array& a, const py::array& table, const Enc& ey, const py::object& isa_name) {
            const std::string op = "softmax";
            const QuantEncoding Y = encoding(ey);
            const int bits = has_dtype<uint16_t>(a) ? 16 : 8;
            const void* ap = codes(op, "a", a, bits);
            const int64_t n = last_dim(op, a);
            py::array_t<uint32_t> t = exact<uint32_t>(op, "table", table);
            if (t.ndim() != 1 || t.shape(0) != ((py::ssize_t)1 << bits))
                bad(op, "the exp table must hold 2^bits uint32 entries (intref.exp_table)");
            const Isa isa = pick_isa(op, isa_name);
            py::array y = new_codes(Y.bits, shape_of(a));
            void* yp = y.mutable_data();
            const int64_t rows = a.size() / n;
            {
                py::gil_scoped_release nogil;
                edge_rt::int_softmax(ap, bits, t.data(), rows, n, Y, yp, isa);
            }
            return y;
        },
        py::arg("a"), py::arg("table"), py::arg("ey"), py::arg("isa") = py::none(),
        "Softmax over the last axis of uint8/uint16 codes with their exp table.");

    m.def(
        "int_lut",
        [](const py::array& a, const py::array& table, const py::object& isa_name) {
            const std::string op = "lut";
            const int bits = has_dtype<uint16_t>(a) ? 16 : 8;
            const void* ap = codes(op, "a", a, bits);
            last_dim(op, a);
            const int y_bits = has_dtype<uint16_t>(table) ? 16 : 8;
            const void* tp = codes(op, "table", table, y_bits);
            if (table.ndim() != 1 || table.shape(0) != ((py::ssize_t)1 << bits))
                bad(op, "the table must hold 2^bits entries for " + std::to_string(bits) + "-bit codes");
            const Isa isa = pick_isa(op, isa_name);
            py::array y = new_codes(y_bits, shape_of(a));
            void* yp = y.mutable_data();
            const int64_t n = a.size();
            {
                py::gil_scoped_release nogil;
                edge_rt::int_lut(ap, bits, tp, y_bits, n, yp, isa);
            }
            return y;
        },
        py::arg("a"), py::arg("table"), py::arg("isa") = py::none(), "table[a] elementwise.");
}

}  // namespace edge_rt_bind
