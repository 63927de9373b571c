// Fixed-point helpers of docs/integer_spec.md, computed exactly as edge_rt.quantize.intref computes them:
// frexp/ldexp are exact and nearbyint rounds half to even (the default rounding mode), as numpy.round does.
#include <algorithm>
#include <cmath>
#include <string>

#include "edge_rt/error.h"
#include "edge_rt/int_kernels.h"

namespace edge_rt {

FixedMultiplier fixed_multiplier(double real, int precision) {
    if (!(real > 0) || !std::isfinite(real))
        fail(ErrorKind::InvalidArgument,
             "[int_kernels] multiplier must be positive and finite, got " + std::to_string(real));
    if (precision < 16 || precision > 31)
        fail(ErrorKind::InvalidArgument,
             "[int_kernels] multiplier precision " + std::to_string(precision) + " outside [16, 31]");
    int e = 0;
    std::frexp(real, &e);  // real * 2^-e in [0.5, 1)
    int64_t m = (int64_t)std::nearbyint(std::ldexp(real, precision - e));
    if (m == ((int64_t)1 << precision)) {
        m = (int64_t)1 << (precision - 1);
        ++e;
    }
    const int s = precision - e;
    if (s < 1 || s > 62)
        fail(ErrorKind::InvalidArgument, "[int_kernels] multiplier " + std::to_string(real) + " needs shift " +
                                             std::to_string(s) + ", outside [1, 62]");
    return {m, s};
}

int bit_length(uint64_t n) { return n == 0 ? 0 : 64 - __builtin_clzll(n); }

int precision_for(uint64_t acc_bound) {
    const int p = std::min(31, 62 - bit_length(acc_bound));
    if (p < 16)
        fail(ErrorKind::InvalidArgument, "[int_kernels] accumulator bound " + std::to_string(acc_bound) + " leaves " +
                                             std::to_string(p) + " multiplier bits (< 16)");
    return p;
}

uint64_t isqrt_u64(uint64_t n) {
    // The double estimate is within a few units of the root for n < 2^64; the loops make it exact.
    uint64_t r = (uint64_t)std::sqrt((double)n);
    while (r > 0 && (r > 0xFFFFFFFFull || r * r > n)) --r;
    while (r + 1 <= 0xFFFFFFFFull && (r + 1) * (r + 1) <= n) ++r;
    return r;
}

}  // namespace edge_rt
