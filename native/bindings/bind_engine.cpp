// Binding of edge_rt::Engine as edge_rt._core.Engine. Converts arguments, releases the GIL around
// C++ work, and polls Python signal handlers between layers so Ctrl-C interrupts generation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "bindings.h"
#include "py_observer.h"
#include "edge_rt/cpu_features.h"
#include "edge_rt/engine.h"
#include "edge_rt/error.h"

namespace py = pybind11;

namespace {

// Lock order: `mutex` is only ever waited for with the GIL released; the GIL may be taken while
// holding it (eval does, between layers, to run signal handlers). Waiting for the mutex with the GIL
// held would deadlock against a running eval.
struct PyEngine {
    std::unique_ptr<edge_rt::Engine> engine;
    std::mutex mutex;  // one eval (or state change) at a time; Python threads may share a Model
    std::atomic<std::thread::id> eval_thread{};          // the thread inside eval, if any
    std::unique_ptr<edge_rt_bind::PyObserver> observer;  // set_observer's, installed in engine
};

// Takes the engine's mutex for a state-changing call, per the lock order above. A call from the
// thread that is inside eval (a Python signal handler run between layers) raises rather than
// deadlocking on itself.
std::unique_lock<std::mutex> lock_engine(PyEngine& self, const char* what) {
    if (self.eval_thread.load() == std::this_thread::get_id()) {
        throw edge_rt::Error(edge_rt::ErrorKind::InvalidArgument,
                             std::string("[") + what +
                                 "] the engine is busy evaluating on this thread "
                                 "(called from a signal handler during generation?)");
    }
    std::unique_lock<std::mutex> lock(self.mutex, std::defer_lock);
    py::gil_scoped_release release;
    lock.lock();
    return lock;
}

// The Python exception a signal handler raised during eval, kept to be re-raised as it is.
struct PendingPyError {
    PyObject* type = nullptr;
    PyObject* value = nullptr;
    PyObject* traceback = nullptr;
};

// Called between layers with the GIL released: briefly takes it to run pending signal handlers. If
// one raised (Ctrl-C's KeyboardInterrupt, or a handler's own exception), it is kept in `pending` and
// eval stops with Interrupted; the binding then raises the handler's exception itself.
bool python_interrupt_pending(PendingPyError& pending) {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
        PyErr_Fetch(&pending.type, &pending.value, &pending.traceback);
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
    d["n_expert"] = c.n_expert;
    d["n_expert_used"] = c.n_expert_used;
    d["n_ff_exp"] = c.n_ff_exp;
    d["n_ff_shexp"] = c.n_ff_shexp;
    d["expert_weights_norm"] = c.expert_weights_norm;
    d["n_params"] = e.n_params();
    d["file_size"] = e.file().file_size();
    d["weight_bytes"] = e.weight_bytes();
    d["kv_cache_bytes"] = e.kv_cache_bytes();
    d["tensor_types"] = hist;
    d["isa"] = edge_rt::isa_name(edge_rt::active_isa());
    d["vec_ops"] = edge_rt::vec_ops_flavour_name(edge_rt::vec_ops_flavour());
    d["threads"] = e.n_threads();
    d["expert_predictor"] = e.expert_predictor() ? py::cast(e.expert_predictor()->path()) : py::none();
    return d;
}

}  // namespace

namespace edge_rt_bind {

// EngineOptions as one flat Python object: load()'s keywords map onto its properties one to one.
// Names are parsed and ranges checked in C++ (engine_options.h); fault injection is reachable only
// through _core.testing.
void bind_engine_options(py::module_& m) {
    using edge_rt::EngineOptions;
    py::class_<EngineOptions>(m, "EngineOptions",
                              "Settings of an Engine (see native/include/edge_rt/engine_options.h).")
        .def(py::init<>())
        .def_property(
            "threads", [](const EngineOptions& o) { return o.context.n_threads; },
            [](EngineOptions& o, int v) { o.context.n_threads = v; })
        .def_property(
            "n_ctx", [](const EngineOptions& o) { return o.context.n_ctx; },
            [](EngineOptions& o, int64_t v) { o.context.n_ctx = v; })
        .def_property(
            "n_ubatch", [](const EngineOptions& o) { return o.context.n_ubatch; },
            [](EngineOptions& o, int64_t v) { o.context.n_ubatch = v; })
        .def_property(
            "mem_budget", [](const EngineOptions& o) { return o.model.mem_budget; },
            [](EngineOptions& o, uint64_t v) { o.model.mem_budget = v; })
        .def_property(
            "host_metadata_bytes", [](const EngineOptions& o) { return o.model.host_metadata_bytes; },
            [](EngineOptions& o, uint64_t v) { o.model.host_metadata_bytes = v; })
        .def_property(
            "npu_bytes", [](const EngineOptions& o) { return o.model.npu_bytes; },
            [](EngineOptions& o, uint64_t v) { o.model.npu_bytes = v; })
        .def_property(
            "repack", [](const EngineOptions& o) { return o.model.repack; },
            [](EngineOptions& o, bool v) { o.model.repack = v; })
        .def_property(
            "window", [](const EngineOptions& o) { return o.model.streaming.window; },
            [](EngineOptions& o, int v) { o.model.streaming.window = v; })
        .def_property(
            "io_mode", [](const EngineOptions& o) { return edge_rt::io_mode_name(o.model.streaming.io_mode); },
            [](EngineOptions& o, const std::string& v) { o.model.streaming.io_mode = edge_rt::parse_io_mode(v); })
        .def_property(
            "prefetch", [](const EngineOptions& o) { return o.model.streaming.prefetch; },
            [](EngineOptions& o, bool v) { o.model.streaming.prefetch = v; })
        .def_property(
            "expert_cache_bytes", [](const EngineOptions& o) { return o.model.streaming.expert_cache_bytes; },
            [](EngineOptions& o, uint64_t v) { o.model.streaming.expert_cache_bytes = v; })
        .def_property(
            "expert_policy",
            [](const EngineOptions& o) { return edge_rt::expert_policy_name(o.model.streaming.expert_policy); },
            [](EngineOptions& o, const std::string& v) {
                o.model.streaming.expert_policy = edge_rt::parse_expert_policy(v);
            })
        .def_property(
            "expert_prefetch",
            [](const EngineOptions& o) { return edge_rt::expert_prefetch_name(o.model.streaming.expert_prefetch); },
            [](EngineOptions& o, const std::string& v) {
                o.model.streaming.expert_prefetch = edge_rt::parse_expert_prefetch(v);
            })
        .def_property(
            "speculative_cap_bytes", [](const EngineOptions& o) { return o.model.streaming.speculative_cap_bytes; },
            [](EngineOptions& o, uint64_t v) { o.model.streaming.speculative_cap_bytes = v; })
        .def_property(
            "prediction_width", [](const EngineOptions& o) { return o.model.streaming.prediction_width; },
            [](EngineOptions& o, int v) { o.model.streaming.prediction_width = v; })
        .def_property(
            "expert_predictor", [](const EngineOptions& o) { return o.model.expert_predictor; },
            [](EngineOptions& o, const std::string& v) { o.model.expert_predictor = v; })
        .def_property(
            "expert_predictor_optional", [](const EngineOptions& o) { return o.model.expert_predictor_optional; },
            [](EngineOptions& o, bool v) { o.model.expert_predictor_optional = v; });
    py::module_ testing = m.def_submodule("testing", "Hooks for edge_rt's own tests; not an API.");
    testing.def(
        "inject_io_fault",
        [](EngineOptions& o, uint64_t after_bytes, bool short_read) {
            o.model.streaming.fault_after_bytes = after_bytes;
            o.model.streaming.fault_short_read = short_read;
        },
        py::arg("options"), py::arg("after_bytes"), py::arg("short_read") = false,
        "Streaming reads fail (EIO, or a short read) once after_bytes have been read.");
}

void bind_engine(py::module_& m) {
    m.attr("MAX_THREADS") = edge_rt::kMaxThreads;
    m.attr("MAX_N_CTX") = edge_rt::kMaxContext;
    // How streaming reads flash (what `edge-rt profile` measures the flash at): request size and depth.
    m.attr("IO_CHUNK_BYTES") = edge_rt::kIoChunkBytes;
    m.attr("IO_THREADS") = edge_rt::StreamingOptions{}.io_threads;
    bind_engine_options(m);
    m.def("check_options", &edge_rt::check_options, py::arg("options"),
          "Raises InvalidArgumentError for an option out of range (the checks Engine's constructor makes first).");
    m.def(
        "minimum_budget",
        [](const std::string& path, const edge_rt::EngineOptions& options) {
            edge_rt::BudgetFloor f;
            {
                py::gil_scoped_release release;
                f = edge_rt::Engine::minimum_budget(path, options);
            }
            py::dict d;
            d["weights"] = f.weights;
            d["expert_predictor"] = f.predictor;
            d["kv_cache"] = f.kv_cache;
            d["scratch"] = f.scratch;
            d["metadata"] = f.metadata;
            d["npu"] = f.npu;
            d["total"] = f.total();
            return d;
        },
        py::arg("path"), py::arg("options"),
        "The least mem_budget (bytes) Engine(path, options) loads with (default window and expert cache), by what "
        "needs it: weights (one window slot + the embedding row buffer; MoE: + routers and one expert), "
        "expert_predictor, kv_cache, scratch, metadata (the parsed GGUF metadata + options.host_metadata_bytes), "
        "npu (options.npu_bytes), total. Reads the GGUF header only.");
    m.def(
        "plan",
        [](const std::string& path, const edge_rt::EngineOptions& options) {
            edge_rt::PlannedLoad p;
            {
                py::gil_scoped_release release;
                p = edge_rt::Engine::plan(path, options);
            }
            const edge_rt::Placement& pl = p.placement;
            py::list units;
            for (size_t u = 0; u < pl.units.size(); ++u) {
                py::list names;
                for (const auto* t : pl.units[u].tensors) names.append(t->name);
                py::dict d;
                d["unit"] = (int)u;
                d["tensors"] = names;
                d["bytes"] = pl.units[u].packed_bytes;
                d["runs"] = pl.units[u].runs.size();
                d["pinned"] = pl.units[u].pinned;
                units.append(d);
            }
            py::dict floor;
            floor["weights"] = p.floor.weights;
            floor["expert_predictor"] = p.floor.predictor;
            floor["kv_cache"] = p.floor.kv_cache;
            floor["scratch"] = p.floor.scratch;
            floor["metadata"] = p.floor.metadata;
            floor["npu"] = p.floor.npu;
            floor["total"] = p.floor.total();
            py::dict d;
            d["streaming"] = p.streaming;
            d["units"] = units;
            d["streamed"] = pl.streamed;
            d["window"] = pl.window;
            d["slot_bytes"] = pl.slot_bytes;
            d["pinned_bytes"] = pl.pinned_bytes;
            d["embd_buf_bytes"] = pl.embd_buf_bytes;
            d["moe"] = pl.moe;
            d["router_bytes"] = pl.router_bytes;
            d["expert_slot_bytes"] = pl.expert_slot_bytes;
            d["expert_slots"] = pl.expert_slots;
            d["total_experts"] = pl.total_experts;
            d["pinned_class_bytes"] = pl.pinned_class_bytes();
            d["window_class_bytes"] = pl.window_class_bytes();
            d["expert_class_bytes"] = pl.expert_class_bytes();
            d["reserved"] = p.reserved;
            d["minimum_budget"] = floor;
            return d;
        },
        py::arg("path"), py::arg("options"),
        "The placement Engine(path, options) would make (Engine::plan), from the header alone: units (layers, then "
        "the head: tensors, packed bytes, runs, pinned), the streamed order, window and slot size, the expert cache "
        "(MoE), the bytes per class, the bytes other classes reserve, and the minimum budget.");
    py::class_<PyEngine>(m, "Engine", "Forward pass of a llama-family GGUF model (private; use edge_rt.load).")
        .def(py::init([](const std::string& path, const edge_rt::EngineOptions& options) {
                 auto pe = std::make_unique<PyEngine>();
                 py::gil_scoped_release release;
                 pe->engine = std::make_unique<edge_rt::Engine>(path, options);
                 return pe;
             }),
             py::arg("path"), py::arg("options"))
        .def_property_readonly(
            "notes", [](const PyEngine& self) { return self.engine->notes(); },
            "What the engine left out instead of failing (an unusable optional expert predictor).")
        .def(
            "eval",
            [](PyEngine& self, py::array_t<int32_t, py::array::c_style | py::array::forcecast> tokens,
               bool all_logits) {
                if (tokens.ndim() != 1) {
                    throw edge_rt::Error(edge_rt::ErrorKind::InvalidArgument, "[eval] tokens must be a 1-D array");
                }
                const int64_t n = (int64_t)tokens.shape(0);
                const int64_t n_vocab = self.engine->config().n_vocab;
                py::array_t<float> out({all_logits ? std::max<int64_t>(n, 1) : 1, n_vocab});
                const int32_t* tok = tokens.data();
                float* dst = out.mutable_data();
                PendingPyError pending;
                try {
                    std::unique_lock<std::mutex> lock = lock_engine(self, "eval");
                    py::gil_scoped_release release;
                    self.eval_thread.store(std::this_thread::get_id());
                    struct Unmark {
                        PyEngine& e;
                        ~Unmark() { e.eval_thread.store(std::thread::id()); }
                    } unmark{self};
                    self.engine->eval(tok, n, all_logits, dst,
                                      [&pending] { return python_interrupt_pending(pending); });
                } catch (...) {
                    if (pending.type) {  // a signal handler raised: that exception, not a translated one
                        PyErr_Restore(pending.type, pending.value, pending.traceback);
                        throw py::error_already_set();
                    }
                    if (self.observer) self.observer->raise_pending();  // likewise an observer's
                    throw;
                }
                return out;
            },
            py::arg("tokens"), py::arg("all_logits") = false,
            "Appends tokens to the KV cache and returns logits: (n, n_vocab) if all_logits else (1, n_vocab).")
        .def("reset",
             [](PyEngine& self) {
                 auto lock = lock_engine(self, "reset");
                 self.engine->reset();
             })
        .def(
            "truncate",
            [](PyEngine& self, int64_t n_past) {
                auto lock = lock_engine(self, "truncate");
                self.engine->truncate(n_past);
            },
            py::arg("n_past"))
        .def(
            "write_kv",
            [](PyEngine& self, int layer, int64_t first,
               py::array_t<float, py::array::c_style | py::array::forcecast> k,
               py::array_t<float, py::array::c_style | py::array::forcecast> v) {
                const int64_t kv_dim = self.engine->kv_dim();
                if (k.ndim() != 2 || v.ndim() != 2 || k.shape(1) != kv_dim || v.shape(0) != k.shape(0) ||
                    v.shape(1) != kv_dim) {
                    throw edge_rt::Error(
                        edge_rt::ErrorKind::InvalidArgument,
                        "[write_kv] k and v must both be (n, " + std::to_string(kv_dim) + ") float32 arrays");
                }
                auto lock = lock_engine(self, "write_kv");
                py::gil_scoped_release release;
                self.engine->write_kv(layer, first, (int64_t)k.shape(0), k.data(), v.data());
            },
            py::arg("layer"), py::arg("first"), py::arg("k"), py::arg("v"),
            "Stores K and V rows (n, kv_dim) float32 (K after RoPE, this model's rotation layout) at positions "
            "[first, first + n) of one layer, as fp16 (engine.h write_kv; no gaps, within n_ctx).")
        .def(
            "commit_kv",
            [](PyEngine& self, int64_t n_past) {
                auto lock = lock_engine(self, "commit_kv");
                self.engine->commit_kv(n_past);
            },
            py::arg("n_past"), "Makes the rows write_kv stored part of the sequence: n_past advances to n_past.")
        .def(
            "read_kv",
            [](PyEngine& self, int layer, int64_t first, int64_t n) {
                const int64_t kv_dim = self.engine->kv_dim();
                if (n < 1) throw edge_rt::Error(edge_rt::ErrorKind::InvalidArgument, "[read_kv] n must be >= 1");
                py::array_t<float> k({n, kv_dim}), v({n, kv_dim});
                float* kd = k.mutable_data();
                float* vd = v.mutable_data();
                {
                    auto lock = lock_engine(self, "read_kv");
                    py::gil_scoped_release release;
                    self.engine->read_kv(layer, first, n, kd, vd);
                }
                return py::make_tuple(k, v);
            },
            py::arg("layer"), py::arg("first"), py::arg("n"),
            "(k, v): the cached rows [first, first + n) of one layer, (n, kv_dim) float32 each.")
        .def_property_readonly("kv_dim", [](const PyEngine& self) { return self.engine->kv_dim(); })
        .def_property_readonly("n_past", [](const PyEngine& self) { return self.engine->n_past(); })
        .def_property_readonly("n_ctx", [](const PyEngine& self) { return self.engine->n_ctx(); })
        .def_property_readonly("n_vocab", [](const PyEngine& self) { return self.engine->config().n_vocab; })
        .def_property_readonly("threads", [](const PyEngine& self) { return self.engine->n_threads(); })
        .def("info", [](const PyEngine& self) { return engine_info(*self.engine); })
        .def("memory_report",
             [](const PyEngine& self) {
                 const edge_rt::MemoryReport r = self.engine->memory_report();
                 py::dict classes;
                 for (size_t i = 0; i < (size_t)edge_rt::MemClass::kCount; ++i)
                     classes[edge_rt::mem_class_name((edge_rt::MemClass)i)] = r.classes[i];
                 py::dict d;
                 d["budget"] = r.budget;
                 d["classes"] = classes;
                 d["total"] = r.total;
                 d["streaming"] = r.streaming;
                 d["window"] = r.window;
                 d["slot_bytes"] = r.slot_bytes;
                 d["pinned_units"] = r.pinned_units;
                 d["streamed_units"] = r.streamed_units;
                 d["streamed_bytes_per_token"] = r.streamed_bytes_per_token;
                 d["io"] = r.io;
                 d["expert_cache_slots"] = r.expert_cache_slots;
                 d["expert_slot_bytes"] = r.expert_slot_bytes;
                 d["total_experts"] = r.total_experts;
                 return d;
             })
        .def("stream_stats",
             [](const PyEngine& self) {
                 const edge_rt::StreamStats s = self.engine->stream_stats();
                 py::dict d;
                 d["bytes_read"] = s.bytes_read;
                 d["io_seconds"] = s.io_seconds;
                 d["stall_seconds"] = s.stall_seconds;
                 d["acquires"] = s.acquires;
                 d["stalls"] = s.stalls;
                 return d;
             })
        .def("stream_events",
             [](const PyEngine& self) {
                 const auto events = self.engine->stream_events();
                 py::list out;
                 for (const auto& e : events) {
                     py::dict d;
                     d["unit"] = e.unit;
                     d["io_start"] = e.io_start;
                     d["io_end"] = e.io_end;
                     d["wait_start"] = e.wait_start;
                     d["acquired"] = e.acquired;
                     d["released"] = e.released;
                     d["bytes"] = e.bytes;
                     out.append(d);
                 }
                 return out;
             })
        .def("expert_stats",
             [](const PyEngine& self) {
                 const edge_rt::ExpertStats s = self.engine->expert_stats();
                 py::dict d;
                 d["cache_slots"] = s.cache_slots;
                 d["slot_bytes"] = s.slot_bytes;
                 d["total_experts"] = s.total_experts;
                 d["uses"] = s.uses;
                 d["hits"] = s.hits;
                 d["misses"] = s.misses;
                 d["bytes_read"] = s.bytes_read;
                 d["reads_on_demand"] = s.reads_on_demand;
                 d["reads_speculative"] = s.reads_speculative;
                 d["speculative_unused"] = s.speculative_unused;
                 d["predictions_dropped"] = s.predictions_dropped;
                 d["stall_seconds"] = s.stall_seconds;
                 py::list layers;
                 for (const auto& l : s.layers) {
                     py::dict ld;
                     ld["uses"] = l.uses;
                     ld["hits"] = l.hits;
                     const char* names[2] = {"same_layer", "next_layer"};
                     for (int src = 0; src < 2; ++src) {
                         py::dict p;
                         p["predicted"] = l.predicted[src];
                         p["correct"] = l.correct[src];
                         p["needed"] = l.needed_with_prediction[src];
                         ld[names[src]] = p;
                     }
                     layers.append(ld);
                 }
                 d["layers"] = layers;
                 return d;
             })
        .def("expert_events",
             [](const PyEngine& self) {
                 py::list out;
                 for (const auto& e : self.engine->expert_events()) {
                     py::dict d;
                     d["layer"] = e.layer;
                     d["expert"] = e.expert;
                     d["speculative"] = e.speculative;
                     d["io_start"] = e.io_start;
                     d["io_end"] = e.io_end;
                     out.append(d);
                 }
                 return out;
             })
        .def("clear_stream_telemetry",
             [](PyEngine& self) {
                 auto lock = lock_engine(self, "clear_stream_telemetry");
                 self.engine->clear_stream_telemetry();
             })
        .def(
            "set_observer",
            [](PyEngine& self, py::object observer) {
                std::unique_ptr<edge_rt_bind::PyObserver> next;
                if (!observer.is_none()) next = std::make_unique<edge_rt_bind::PyObserver>(observer);
                auto lock = lock_engine(self, "set_observer");
                self.engine->set_observer(next.get());
                self.observer = std::move(next);
            },
            py::arg("observer"),
            "Installs the evaluation observer (see edge_rt.observer.EvalObserver); None removes it.");
}

}  // namespace edge_rt_bind
