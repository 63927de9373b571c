// A Python object as the engine's EvalObserver (edge_rt/eval_observer.h), for Engine.set_observer.
//
// The Python side (edge_rt.observer.EvalObserver documents it): `kinds`, an iterable of
// "matmul_input", "router_probs", "ffn_input", read once at set_observer; begin(n_past, n_tokens);
// observe(kind, layer, weight, expert, values) with values a float32 (rows, cols) copy and weight the
// tensor name (None unless matmul_input); end(completed).
//
// The engine calls it from its thread with the GIL released; each call takes the GIL. An exception
// raised by the Python object is kept (`pending`) and aborts the eval with Interrupted; the binding
// then re-raises the Python exception itself.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include "edge_rt/error.h"
#include "edge_rt/eval_observer.h"

namespace edge_rt_bind {

namespace py = pybind11;

class PyObserver final : public edge_rt::EvalObserver {
public:
    explicit PyObserver(py::object target) : target_(std::move(target)) {
        for (py::handle kind : target_.attr("kinds")) {
            const std::string k = py::str(kind);
            int i = -1;
            for (int j = 0; j < edge_rt::kObservedKinds; ++j)
                if (k == kKindNames[j]) i = j;
            if (i < 0) {
                throw edge_rt::Error(
                    edge_rt::ErrorKind::InvalidArgument,
                    "[observe] unknown observation kind '" + k + "' (known: matmul_input, router_probs, ffn_input)");
            }
            wanted_[i] = true;
        }
    }
    ~PyObserver() override { clear_pending(); }

    bool wants(edge_rt::Observed kind) const override { return wanted_[(int)kind]; }

    void begin_eval(int64_t n_past, int64_t n_tokens) override {
        call([&] { target_.attr("begin")(n_past, n_tokens); });
    }
    void observe(const edge_rt::Observation& o) override {
        call([&] {
            py::array_t<float> values({(py::ssize_t)o.rows, (py::ssize_t)o.cols});
            std::memcpy(values.mutable_data(), o.data, (size_t)(o.rows * o.cols) * sizeof(float));
            py::object weight = o.weight ? py::object(py::str(o.weight->name)) : py::object(py::none());
            target_.attr("observe")(kKindNames[(int)o.kind], o.layer, weight, o.expert, values);
        });
    }
    void end_eval(bool completed) override {
        // After a failure the Python exception that caused it (if any) stays the one reported.
        py::gil_scoped_acquire gil;
        try {
            target_.attr("end")(completed);
        } catch (py::error_already_set& e) {
            if (pending_type_) return;  // the exception that failed the eval stays the one reported
            e.restore();
            PyErr_Fetch(&pending_type_, &pending_value_, &pending_tb_);
            if (completed) throw edge_rt::Error(edge_rt::ErrorKind::Interrupted, "[observe] the observer raised");
        }
    }

    // Re-raises the Python exception an observer call raised, if any (GIL held).
    void raise_pending() {
        if (!pending_type_) return;
        PyErr_Restore(pending_type_, pending_value_, pending_tb_);
        pending_type_ = pending_value_ = pending_tb_ = nullptr;
        throw py::error_already_set();
    }

private:
    static constexpr const char* kKindNames[edge_rt::kObservedKinds] = {"matmul_input", "router_probs", "ffn_input"};

    template <class Fn>
    void call(Fn&& fn) {
        py::gil_scoped_acquire gil;
        try {
            fn();
        } catch (py::error_already_set& e) {
            e.restore();
            PyErr_Fetch(&pending_type_, &pending_value_, &pending_tb_);
            throw edge_rt::Error(edge_rt::ErrorKind::Interrupted, "[observe] the observer raised");
        }
    }
    void clear_pending() {
        if (!pending_type_ && !pending_value_ && !pending_tb_) return;
        py::gil_scoped_acquire gil;
        Py_XDECREF(pending_type_);
        Py_XDECREF(pending_value_);
        Py_XDECREF(pending_tb_);
        pending_type_ = pending_value_ = pending_tb_ = nullptr;
    }

    py::object target_;
    bool wanted_[edge_rt::kObservedKinds] = {};
    PyObject* pending_type_ = nullptr;
    PyObject* pending_value_ = nullptr;
    PyObject* pending_tb_ = nullptr;
};

}  // namespace edge_rt_bind
