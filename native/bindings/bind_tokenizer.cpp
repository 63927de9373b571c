// edge_rt._core.testing.CTokenizer: the C ABI's C++ tokenizer (edge_rt/tokenizer.h) reachable from Python, so
// the tests can compare it with the Python tokenizer on vocabulary-only GGUFs (which the C ABI cannot load: it
// tokenizes through a model). Not an API.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "edge_rt/gguf_reader.h"
#include "edge_rt/tokenizer.h"

namespace py = pybind11;

namespace edge_rt_bind {

void bind_tokenizer(py::module_& m) {
    py::module_ testing = m.attr("testing").cast<py::module_>();
    using edge_rt::Tokenizer;
    py::class_<Tokenizer>(testing, "CTokenizer", "The C ABI's tokenizer (native/include/edge_rt/tokenizer.h).")
        .def(py::init([](const std::string& path) {
                 py::gil_scoped_release release;
                 return Tokenizer::from_gguf(*edge_rt::GgufFile::open(path));
             }),
             py::arg("path"))
        .def(
            "tokenize",
            [](const Tokenizer& t, const py::bytes& text, bool add_special, bool parse_special) {
                std::string s = text;
                py::gil_scoped_release release;
                return t.tokenize(s, add_special, parse_special);
            },
            py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false)
        .def(
            "detokenize",
            [](const Tokenizer& t, const std::vector<int32_t>& ids, bool special) {
                return py::bytes(t.detokenize(ids.data(), ids.size(), special));
            },
            py::arg("ids"), py::arg("special") = false)
        .def_property_readonly("can_tokenize", &Tokenizer::can_tokenize)
        .def("is_eog", &Tokenizer::is_eog, py::arg("token"));
    testing.def(
        "c_pre_tokenizers",
        [] {
            static const char* const kSplit[] = {"gpt2", "digits+gpt2", "llama3", "qwen2", "qwen35"};
            py::list out;
            for (const Tokenizer::PreTokenizer& p : Tokenizer::pre_tokenizers()) {
                py::dict d;
                d["name"] = p.name;
                d["split"] = kSplit[(int)p.split];
                d["ignore_merges"] = p.ignore_merges;
                d["add_bos"] = p.add_bos;
                d["bos_is_null"] = p.bos_is_null;
                out.append(d);
            }
            return out;
        },
        "The tokenizer.ggml.pre names the C tokenizer runs, with their settings.");
}

}  // namespace edge_rt_bind
