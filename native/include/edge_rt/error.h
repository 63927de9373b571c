// edge_rt error model: one exception type for the whole C++ core.
//
// Contract: every failure the core can detect is thrown as edge_rt::Error with a kind and a message
// that starts with the operation in brackets and names the offending tensor or key, e.g.
//   "[gguf] tensor 'blk.3.attn_q.weight': data range [1024, 99999) lies past end of file (4096 bytes)".
// The pybind11 adapter maps each kind once to a specific Python exception (edge_rt.errors).
#pragma once

#include <stdexcept>
#include <string>

namespace edge_rt {

enum class ErrorKind {
    ModelFormat,              // malformed or inconsistent model file  -> edge_rt.ModelFormatError
    UnsupportedArchitecture,  // well-formed file, architecture we do not run -> edge_rt.UnsupportedArchitectureError
    UnsupportedType,          // tensor type we cannot compute with -> edge_rt.UnsupportedTypeError
    InvalidArgument,          // caller passed bad arguments -> ValueError subclass edge_rt.InvalidArgumentError
    Io,                       // open/read failed -> edge_rt.ModelIOError (an OSError)
    OutOfMemory,              // allocation or budget failure -> edge_rt.OutOfMemoryError (a MemoryError)
    Interrupted,              // cancelled by the caller (Ctrl-C) -> KeyboardInterrupt
    Internal,                 // a bug in edge_rt -> edge_rt.EdgeRTError
};

class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const noexcept { return kind_; }

private:
    ErrorKind kind_;
};

[[noreturn]] inline void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

}  // namespace edge_rt
