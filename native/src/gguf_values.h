// Shared by the GGUF parser (gguf_reader.cpp) and the typed metadata access (gguf_metadata.cpp):
// value-type classes and the rendering of file bytes in error messages. Internal.
#pragma once

#include <cstddef>
#include <string>

#include "edge_rt/gguf_reader.h"

namespace edge_rt {

bool is_integer_type(GgufValueType t);
bool is_float_type(GgufValueType t);
std::string full_type_name(const GgufValue& v);  // "UINT32", "ARRAY[STRING]", ...
// Bytes read from the file, for an error message: printable ASCII as is, the rest as \xNN.
std::string printable(const char* p, size_t n);
std::string quoted(const std::string& s);  // 'printable(s)'

}  // namespace edge_rt
