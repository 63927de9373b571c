// pybind11 adapter for the GGUF reader: edge_rt._core.GGUFFile. Parsing runs with the GIL released;
// metadata is converted to Python objects once and cached (tokenizer vocabularies hold ~150k strings).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "bindings.h"
#include "edge_rt/gguf_reader.h"

namespace py = pybind11;

namespace {

using edge_rt::GgufFile;
using edge_rt::GgufTensorInfo;
using edge_rt::GgufValue;
using edge_rt::GgufValueType;

// GGUF strings should be UTF-8 but files in the wild are not always; surrogateescape keeps every byte
// (recover them with s.encode("utf-8", "surrogateescape")) instead of failing the whole file.
py::str to_str(const std::string& s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

bool is_float_type(GgufValueType t) { return t == GgufValueType::FLOAT32 || t == GgufValueType::FLOAT64; }

std::string type_string(const GgufValue& v) {
    if (v.type != GgufValueType::ARRAY) return edge_rt::gguf_value_type_name(v.type);
    return std::string("ARRAY[") + edge_rt::gguf_value_type_name(v.array_type) + "]";
}

// Builds a list of n items with PyList_SET_ITEM: much faster than append for 150k-entry vocabularies.
template <typename F>
py::list make_list(size_t n, F&& item) {
    PyObject* l = PyList_New(static_cast<Py_ssize_t>(n));
    if (!l) throw py::error_already_set();
    py::list list = py::reinterpret_steal<py::list>(l);
    for (size_t k = 0; k < n; ++k) {
        py::object o = item(k);
        PyList_SET_ITEM(l, static_cast<Py_ssize_t>(k), o.release().ptr());
    }
    return list;
}

py::object to_python(const GgufValue& v) {
    switch (v.type) {
        case GgufValueType::BOOL: return py::bool_(v.i != 0);
        case GgufValueType::UINT64: return py::int_(v.u);
        case GgufValueType::FLOAT32:
        case GgufValueType::FLOAT64: return py::float_(v.f);
        case GgufValueType::STRING: return to_str(v.s);
        case GgufValueType::ARRAY:
            if (v.array_type == GgufValueType::STRING) {
                return make_list(v.strings.size(), [&](size_t k) -> py::object { return to_str(v.strings[k]); });
            }
            if (is_float_type(v.array_type)) {
                return make_list(v.floats.size(), [&](size_t k) -> py::object { return py::float_(v.floats[k]); });
            }
            if (v.array_type == GgufValueType::BOOL) {
                return make_list(v.ints.size(), [&](size_t k) -> py::object { return py::bool_(v.ints[k] != 0); });
            }
            if (v.array_type == GgufValueType::UINT64) {
                // Stored as the bit pattern; give Python the unsigned value back.
                return make_list(v.ints.size(),
                                 [&](size_t k) -> py::object { return py::int_(static_cast<uint64_t>(v.ints[k])); });
            }
            return make_list(v.ints.size(), [&](size_t k) -> py::object { return py::int_(v.ints[k]); });
        default: return py::int_(v.i);  // remaining integer types
    }
}

py::dict tensor_dict(const GgufTensorInfo& t) {
    py::dict d;
    d["name"] = to_str(t.name);
    d["type"] = edge_rt::type_name(t.type);
    d["type_id"] = static_cast<uint32_t>(t.type);
    py::list shape;
    for (uint32_t k = 0; k < t.n_dims; ++k) shape.append(t.ne[k]);
    d["shape"] = shape;
    d["offset"] = t.offset;
    d["n_bytes"] = t.n_bytes;
    d["n_elements"] = t.n_elements;
    return d;
}

// Python-side handle: the immutable parsed file plus lazily built, cached Python views of it.
struct PyGgufFile {
    std::shared_ptr<const GgufFile> file;
    py::object metadata;        // dict, built on first access
    py::object metadata_types;  // dict, built on first access
};

}  // namespace

namespace edge_rt_bind {

void bind_gguf(py::module_& m) {
    py::class_<PyGgufFile>(
        m, "GGUFFile",
        "A parsed, validated GGUF v2/v3 file: header, metadata and tensor infos (no tensor data).\n"
        "Raises edge_rt.ModelFormatError for a malformed file, edge_rt.ModelIOError if it cannot be read.")
        .def(py::init([](py::object path, uint64_t max_metadata_bytes) {
                 // fsencode accepts str, bytes and os.PathLike and keeps non-UTF-8 file names intact.
                 std::string p = py::module_::import("os").attr("fsencode")(path).cast<std::string>();
                 auto h = std::make_unique<PyGgufFile>();
                 edge_rt::GgufOpenLimits limits;
                 limits.max_metadata_bytes = max_metadata_bytes;
                 {
                     py::gil_scoped_release nogil;
                     h->file = GgufFile::open(p, limits);
                 }
                 return h;
             }),
             py::arg("path"), py::arg("max_metadata_bytes") = 0,
             "max_metadata_bytes: refuse (edge_rt.OutOfMemoryError, stating the need) a file whose parsed metadata "
             "would hold more RAM than this, before allocating it; 0 = only the reader's ceiling (8x the file size)")
        .def_property_readonly(
            "metadata_bytes", [](const PyGgufFile& h) { return h.file->metadata_bytes(); },
            "Bytes of RAM the parsed metadata and tensor infos hold in C++ (not counting the Python dict built on "
            "first access to .metadata)")
        .def_property_readonly(
            "path",
            [](const PyGgufFile& h) { return py::module_::import("os").attr("fsdecode")(py::bytes(h.file->path())); })
        .def_property_readonly("version", [](const PyGgufFile& h) { return h.file->version(); })
        .def_property_readonly("file_size", [](const PyGgufFile& h) { return h.file->file_size(); })
        .def_property_readonly("alignment", [](const PyGgufFile& h) { return h.file->alignment(); })
        .def_property_readonly("data_offset", [](const PyGgufFile& h) { return h.file->data_offset(); })
        .def_property_readonly(
            "metadata",
            [](PyGgufFile& h) {
                if (!h.metadata) {
                    py::dict d;
                    for (const auto& kv : h.file->metadata()) d[to_str(kv.first)] = to_python(kv.second);
                    h.metadata = std::move(d);
                }
                return h.metadata;
            },
            "dict key -> value in file order (int/float/bool/str or a list of them). Cached: do not mutate.")
        .def(
            "get",
            [](const PyGgufFile& h, const py::str& key, py::object fallback) -> py::object {
                // Keys come back from .metadata with surrogateescape: encode them the same way.
                PyObject* b = PyUnicode_AsEncodedString(key.ptr(), "utf-8", "surrogateescape");
                if (!b) throw py::error_already_set();
                const GgufValue* v = h.file->find(py::reinterpret_steal<py::bytes>(b).cast<std::string>());
                return v ? to_python(*v) : fallback;
            },
            py::arg("key"), py::arg("default") = py::none(),
            "One metadata value (as in .metadata) without converting the others, or default when absent")
        .def_property_readonly(
            "metadata_types",
            [](PyGgufFile& h) {
                if (!h.metadata_types) {
                    py::dict d;
                    for (const auto& kv : h.file->metadata()) d[to_str(kv.first)] = type_string(kv.second);
                    h.metadata_types = std::move(d);
                }
                return h.metadata_types;
            },
            "dict key -> GGUF type name, e.g. 'UINT32' or 'ARRAY[STRING]'. Cached: do not mutate.")
        .def_property_readonly(
            "tensors",
            [](const PyGgufFile& h) {
                const auto& ts = h.file->tensors();
                return make_list(ts.size(), [&](size_t k) -> py::object { return tensor_dict(ts[k]); });
            },
            "list of dicts (name, type, type_id, shape innermost first, offset absolute, n_bytes, n_elements) in file "
            "order")
        .def(
            "tensor",
            [](const PyGgufFile& h, const std::string& name) {
                const GgufTensorInfo* t = h.file->find_tensor(name);
                if (!t) throw py::key_error("[gguf] no tensor named '" + name + "' in " + h.file->path());
                return tensor_dict(*t);
            },
            py::arg("name"), "the info dict of one tensor; KeyError if absent")
        .def("__repr__", [](const PyGgufFile& h) {
            return "<GGUFFile '" + h.file->path() + "' v" + std::to_string(h.file->version()) + ", " +
                   std::to_string(h.file->metadata().size()) + " keys, " + std::to_string(h.file->tensors().size()) +
                   " tensors>";
        });
}

}  // namespace edge_rt_bind
