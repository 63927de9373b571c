// libFuzzer harness: the GGUF reader and the model-config checks on arbitrary bytes.
//
// Every input must end in a parsed file or an edge_rt::Error (ModelFormat, UnsupportedArchitecture,
// UnsupportedType; Io never, the bytes are all there). Anything else is a finding: a crash, a sanitizer
// report, another exception type, or an allocation past libFuzzer's -rss_limit_mb / -malloc_limit_mb
// (the reader promises to allocate nothing the bytes left in the file cannot justify).
// A parsed file is also walked through its typed getters, the way the engine and the tokenizer
// read it, so that values the parser accepted are exercised by their consumers.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "edge_rt/error.h"
#include "edge_rt/gguf_reader.h"
#include "edge_rt/model_config.h"
#include "fuzz_file.h"

using namespace edge_rt;

namespace {

void walk_metadata(const GgufFile& f) {
    for (const auto& kv : f.metadata()) {
        const GgufValue& v = kv.second;
        try {
            if (v.type == GgufValueType::ARRAY) {
                if (v.array_type == GgufValueType::STRING)
                    (void)f.get_string_array(kv.first).size();
                else if (v.array_type == GgufValueType::FLOAT32 || v.array_type == GgufValueType::FLOAT64)
                    (void)f.get_float_array(kv.first).size();
                else
                    (void)f.get_int_array(kv.first).size();
            } else if (v.type == GgufValueType::STRING) {
                (void)f.get_string(kv.first);
            } else if (v.type == GgufValueType::BOOL) {
                (void)f.get_bool_or(kv.first, false);
            } else {
                (void)f.get_float(kv.first);
                if (v.is_integer()) (void)f.get_int(kv.first);
            }
        } catch (const Error& e) {
            if (e.kind() != ErrorKind::ModelFormat) std::abort();
        }
    }
    for (const GgufTensorInfo& t : f.tensors()) {
        if (f.find_tensor(t.name) != &t) std::abort();  // the index must agree with the list
        (void)t.row_bytes();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzFile file(data, size);
    std::shared_ptr<const GgufFile> gguf;
    try {
        gguf = GgufFile::open(file.path());
    } catch (const Error& e) {
        if (e.kind() != ErrorKind::ModelFormat) std::abort();
        return 0;
    }
    walk_metadata(*gguf);
    try {
        ModelConfig cfg = ModelConfig::from_gguf(*gguf);
        (void)cfg.rope_factors_tensor(cfg.n_ctx_train);
    } catch (const Error& e) {
        switch (e.kind()) {
            case ErrorKind::ModelFormat:
            case ErrorKind::UnsupportedArchitecture:
            case ErrorKind::UnsupportedType: break;
            default: std::abort();
        }
    }
    return 0;
}
