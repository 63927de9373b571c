// Type tables for ggml tensor element types: names and block geometry as ggml defines them.
#include "edge_rt/ggml_types.h"

#include <string>

#include "edge_rt/error.h"

namespace edge_rt {

namespace {

// Indexed by ggml type id; ids ggml retired or that we do not size (4, 5, 16..23, 29) stay null.
// Size of the K-quant block we have no struct for (Q2_K) is ggml's:
//   Q2_K: scales[16] + qs[64] + d + dmin           = 84
struct Entry {
    uint32_t id;
    TypeTraits traits;
};

constexpr Entry kEntries[] = {
    {0, {"F32", 1, 4}},
    {1, {"F16", 1, 2}},
    {2, {"Q4_0", QK4_0, sizeof(BlockQ4_0)}},
    {3, {"Q4_1", QK4_1, sizeof(BlockQ4_1)}},
    {6, {"Q5_0", QK5_0, sizeof(BlockQ5_0)}},
    {7, {"Q5_1", QK5_1, sizeof(BlockQ5_1)}},
    {8, {"Q8_0", QK8_0, sizeof(BlockQ8_0)}},
    {9, {"Q8_1", QK8_1, sizeof(BlockQ8_1)}},
    {10, {"Q2_K", QK_K, 84}},
    {11, {"Q3_K", QK_K, sizeof(BlockQ3_K)}},
    {12, {"Q4_K", QK_K, sizeof(BlockQ4_K)}},
    {13, {"Q5_K", QK_K, sizeof(BlockQ5_K)}},
    {14, {"Q6_K", QK_K, sizeof(BlockQ6_K)}},
    {15, {"Q8_K", QK_K, sizeof(BlockQ8_K)}},
    {24, {"I8", 1, 1}},
    {25, {"I16", 1, 2}},
    {26, {"I32", 1, 4}},
    {27, {"I64", 1, 8}},
    {28, {"F64", 1, 8}},
    {30, {"BF16", 1, 2}},
};

constexpr uint32_t kMaxId = 31;

struct Table {
    const TypeTraits* by_id[kMaxId] = {};
    Table() {
        for (const Entry& e : kEntries) by_id[e.id] = &e.traits;
    }
};

const Table& table() {
    static const Table t;
    return t;
}

}  // namespace

const TypeTraits* type_traits(uint32_t type_id) noexcept {
    if (type_id >= kMaxId) return nullptr;
    return table().by_id[type_id];
}

const TypeTraits& type_traits(GgmlType type) {
    const TypeTraits* t = type_traits(static_cast<uint32_t>(type));
    if (!t) fail(ErrorKind::Internal, "[ggml] unknown type id " + std::to_string(static_cast<uint32_t>(type)));
    return *t;
}

const char* type_name(GgmlType type) noexcept {
    const TypeTraits* t = type_traits(static_cast<uint32_t>(type));
    return t ? t->name : "UNKNOWN";
}

bool is_compute_type(GgmlType type) noexcept {
    switch (type) {
        case GgmlType::F32:
        case GgmlType::F16:
        case GgmlType::BF16:
        case GgmlType::Q8_0:
        case GgmlType::Q4_0:
        case GgmlType::Q4_1:
        case GgmlType::Q5_0:
        case GgmlType::Q5_1:
        case GgmlType::Q3_K:
        case GgmlType::Q4_K:
        case GgmlType::Q5_K:
        case GgmlType::Q6_K: return true;
        default: return false;
    }
}

}  // namespace edge_rt
