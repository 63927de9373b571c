// pybind11 adapter: edge_rt._core. Thin by design: argument conversion, GIL release, and the one
// mapping of edge_rt::Error kinds to the Python exceptions defined in edge_rt/errors.py.
#include <pybind11/pybind11.h>

#include <cstring>

#include "bindings.h"
#include "edge_rt/error.h"

namespace py = pybind11;

namespace {

// Messages may quote bytes from a model file that are not UTF-8: PyErr_SetString would then fail to
// decode them and raise UnicodeDecodeError in place of the error; undecodable bytes become \xNN.
void set_error(PyObject* type, const char* message) {
    PyObject* text = PyUnicode_DecodeUTF8(message, (Py_ssize_t)std::strlen(message), "backslashreplace");
    if (!text) return;  // MemoryError is set
    PyErr_SetObject(type, text);
    Py_DECREF(text);
}

void register_error_translator() {
    // Imported lazily inside the translator so module import order never matters.
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const edge_rt::Error& e) {
            const char* cls = "EdgeRTError";
            switch (e.kind()) {
                case edge_rt::ErrorKind::ModelFormat: cls = "ModelFormatError"; break;
                case edge_rt::ErrorKind::UnsupportedArchitecture: cls = "UnsupportedArchitectureError"; break;
                case edge_rt::ErrorKind::UnsupportedType: cls = "UnsupportedTypeError"; break;
                case edge_rt::ErrorKind::InvalidArgument: cls = "InvalidArgumentError"; break;
                case edge_rt::ErrorKind::Io: cls = "ModelIOError"; break;
                case edge_rt::ErrorKind::OutOfMemory: cls = "OutOfMemoryError"; break;
                case edge_rt::ErrorKind::Interrupted: set_error(PyExc_KeyboardInterrupt, e.what()); return;
                case edge_rt::ErrorKind::Internal: cls = "EdgeRTError"; break;
            }
            py::gil_scoped_acquire gil;
            py::object type = py::module_::import("edge_rt.errors").attr(cls);
            set_error(type.ptr(), e.what());
        } catch (const std::bad_alloc&) {
            PyErr_SetString(PyExc_MemoryError, "[edge_rt] out of memory");
        }
    });
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "edge_rt native core (private; use the edge_rt package)";
    register_error_translator();
    edge_rt_bind::bind_system(m);
    edge_rt_bind::bind_gguf(m);
    edge_rt_bind::bind_kernels(m);
    edge_rt_bind::bind_int_kernels(m);
    edge_rt_bind::bind_engine(m);
    edge_rt_bind::bind_tokenizer(m);  // after bind_engine, which makes the testing submodule
}
