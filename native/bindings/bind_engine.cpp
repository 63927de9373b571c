// Binding of edge_rt::Engine as edge_rt._core.Engine. Converts arguments, releases the GIL around
// C++ work, and polls Python signal handlers between layers so Ctrl-C interrupts generation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <mutex>

#include "bindings.h"
#include "edge_rt/cpu_features.h"
#include "edge_rt/engine.h"
#include "edge_rt/error.h"

namespace py = pybind11;

namespace {

struct PyEngine {
    std::unique_ptr<edge_rt::Engine> engine;
    std::mutex mutex;  // one eval at a time; Python threads may share a Model
};

// Called between layers with the GIL released: briefly takes it to run pending signal handlers
// (Ctrl-C raises KeyboardInterrupt inside PyErr_CheckSignals).
bool python_interrupt_pending() {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
        PyErr_Clear();  // the translator raises KeyboardInterrupt from the Interrupted error
        return true;
    }
    return false;
}

py::dict engine_info(const edge_rt::Engine& e) {
    const edge_rt::ModelConfig& c = e.config();
    std::map<std::string, int> hist;
    for (const auto& t : e.file().tensors()) hist[edge_rt::type_name(t.type)] += 1;
    py::dict d;
    d["arch"] = c.arch;
    d["n_vocab"] = c.n_vocab;
    d["n_embd"] = c.n_embd;
    d["n_layer"] = c.n_layer;
    d["n_head"] = c.n_head;
    d["n_head_kv"] = c.n_head_kv;
    d["head_dim"] = c.head_dim;
    d["n_ff"] = c.n_ff;
    d["n_rot"] = c.n_rot;
    d["n_ctx_train"] = c.n_ctx_train;
    d["n_ctx"] = e.n_ctx();
    d["rope_freq_base"] = c.rope_freq_base;
    d["rope_scale"] = c.rope_freq_scale;
    d["rope_kind"] = c.rope_kind == edge_rt::RopeKind::NeoX ? "neox" : "normal";
    d["rms_eps"] = c.rms_eps;
    d["tied_output"] = c.tied_output;
    d["n_params"] = e.n_params();
    d["file_size"] = e.file().file_size();
    d["weight_bytes"] = e.weight_bytes();
    d["kv_cache_bytes"] = e.kv_cache_bytes();
    d["tensor_types"] = hist;
    d["isa"] = edge_rt::isa_name(edge_rt::active_isa());
    d["threads"] = e.n_threads();
    return d;
}

}  // namespace

namespace edge_rt_bind {

void bind_engine(py::module_& m) {
    py::class_<PyEngine>(m, "Engine", "Forward pass of a llama-family GGUF model (private; use edge_rt.load).")
        .def(py::init([](const std::string& path, int threads, int64_t n_ctx) {
                 auto pe = std::make_unique<PyEngine>();
                 edge_rt::EngineOptions opt;
                 opt.n_threads = threads;
                 opt.n_ctx = n_ctx;
                 py::gil_scoped_release release;
                 pe->engine = std::make_unique<edge_rt::Engine>(path, opt);
                 return pe;
             }),
             py::arg("path"), py::arg("threads") = 1, py::arg("n_ctx") = 2048)
        .def(
            "eval",
            [](PyEngine& self, py::array_t<int32_t, py::array::c_style | py::array::forcecast> tokens, bool all_logits) {
                if (tokens.ndim() != 1) {
                    throw edge_rt::Error(edge_rt::ErrorKind::InvalidArgument, "[eval] tokens must be a 1-D array");
                }
                const int64_t n = (int64_t)tokens.shape(0);
                const int64_t n_vocab = self.engine->config().n_vocab;
                py::array_t<float> out({all_logits ? std::max<int64_t>(n, 1) : 1, n_vocab});
                const int32_t* tok = tokens.data();
                float* dst = out.mutable_data();
                {
                    py::gil_scoped_release release;
                    std::lock_guard<std::mutex> lock(self.mutex);
                    self.engine->eval(tok, n, all_logits, dst, python_interrupt_pending);
                }
                return out;
            },
            py::arg("tokens"), py::arg("all_logits") = false,
            "Appends tokens to the KV cache and returns logits: (n, n_vocab) if all_logits else (1, n_vocab).")
        .def("reset", [](PyEngine& self) {
            std::lock_guard<std::mutex> lock(self.mutex);
            self.engine->reset();
        })
        .def(
            "truncate",
            [](PyEngine& self, int64_t n_past) {
                std::lock_guard<std::mutex> lock(self.mutex);
                self.engine->truncate(n_past);
            },
            py::arg("n_past"))
        .def_property_readonly("n_past", [](const PyEngine& self) { return self.engine->n_past(); })
        .def_property_readonly("n_ctx", [](const PyEngine& self) { return self.engine->n_ctx(); })
        .def_property_readonly("n_vocab", [](const PyEngine& self) { return self.engine->config().n_vocab; })
        .def_property_readonly("threads", [](const PyEngine& self) { return self.engine->n_threads(); })
        .def("info", [](const PyEngine& self) { return engine_info(*self.engine); });
}

}  // namespace edge_rt_bind
