/* edge_rt C ABI (C99): load a GGUF model, tokenize, evaluate and generate, from any language that calls C
 * (JNI on Android, cffi/ctypes, Swift, Rust...). Built as libedge_rt.so over the same C++ engine as the
 * Python module; only the edge_rt_* symbols are exported.
 *
 * Contract
 *  - Errors: every function that can fail returns an edge_rt_status (EDGE_RT_OK = 0). No C++ exception ever
 *    crosses this ABI. The message of the last failure is edge_rt_last_error(model) for calls on a model,
 *    and edge_rt_last_error(NULL) (thread-local) for every failure of this thread, including
 *    edge_rt_model_create and calls given an invalid handle. Messages start with the operation in brackets,
 *    e.g. "[gguf] tensor 'blk.0.attn_q.weight': data range ... lies past end of file".
 *  - Handles: an edge_rt_model* is an opaque handle, never a pointer to memory. Live handles are kept in a
 *    registry; a handle that was freed (or never created, or NULL) gives EDGE_RT_ERR_INVALID_HANDLE, never
 *    undefined behaviour. Handles come from a counter and are not reused within a process (on 32-bit targets
 *    until 2^32 creations). edge_rt_model_free on a freed handle is a no-op returning
 *    EDGE_RT_ERR_INVALID_HANDLE.
 *  - Threads: a model may be shared by threads; calls on one model run one at a time (a mutex), except
 *    edge_rt_cancel, which never waits. Freeing a model while a call on it runs (on another thread, or from
 *    its token callback) is safe: the call is cancelled (EDGE_RT_ERR_CANCELLED, or EDGE_RT_OK if it was
 *    finishing), and the model is released when it returns.
 *  - Pointers: NULL where an array or output pointer is required gives EDGE_RT_ERR_INVALID_ARGUMENT.
 *    Buffers are caller-owned; when one is too small the call returns EDGE_RT_ERR_BUFFER_TOO_SMALL and stores
 *    the size it needs in *n_out (query with cap 0).
 *  - Strings returned are owned by the library: edge_rt_last_error's until this thread's next edge_rt call,
 *    edge_rt_version's and edge_rt_status_name's for the life of the process; copy the former to keep it.
 *  - Versioning: EDGE_RT_ABI_VERSION grows by one with every change of this header that old callers could
 *    notice; structs carry struct_size (set by their *_init function) so fields can be appended later.
 */
#ifndef EDGE_RT_H
#define EDGE_RT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGE_RT_API __attribute__((visibility("default"))) /* GCC/Clang: Linux, Android */

#define EDGE_RT_ABI_VERSION 1

typedef enum edge_rt_status {
    EDGE_RT_OK = 0,
    EDGE_RT_ERR_INVALID_ARGUMENT = 1, /* a bad argument: NULL pointer, token id out of range, option range */
    EDGE_RT_ERR_MODEL_FORMAT = 2,     /* malformed or inconsistent model file */
    EDGE_RT_ERR_UNSUPPORTED = 3,      /* well-formed, but an architecture/tokenizer edge_rt does not run */
    EDGE_RT_ERR_UNSUPPORTED_TYPE = 4, /* a tensor type edge_rt cannot compute with */
    EDGE_RT_ERR_IO = 5,               /* open/read failed */
    EDGE_RT_ERR_OUT_OF_MEMORY = 6,    /* allocation failed, or mem_budget below what the model needs */
    EDGE_RT_ERR_CANCELLED = 7,        /* edge_rt_cancel, or the token callback asked to stop */
    EDGE_RT_ERR_INVALID_HANDLE = 8,   /* NULL, freed or unknown edge_rt_model* */
    EDGE_RT_ERR_BUFFER_TOO_SMALL = 9, /* *n_out holds the size needed */
    EDGE_RT_ERR_CONTEXT_FULL = 10,    /* the tokens do not fit in n_ctx */
    EDGE_RT_ERR_INTERNAL = 11         /* a bug in edge_rt */
} edge_rt_status;

typedef struct edge_rt_model edge_rt_model; /* opaque handle */

/* Load options. Zero means "the default" for every count and size. */
typedef struct edge_rt_options {
    uint32_t struct_size;        /* sizeof(edge_rt_options); set by edge_rt_options_init */
    const char* model_path;      /* GGUF file (required) */
    int64_t n_ctx;               /* KV cache capacity in tokens; 0 = min(2048, the model's training context) */
    int32_t n_threads;           /* worker threads; 0 = the CPUs this process may use (at most 8) */
    uint64_t mem_budget;         /* hard cap on the engine's memory in bytes; 0 = none (all weights resident) */
    int32_t window;              /* layer slots streamed through under a budget; 0 = the planner's choice */
    int64_t n_ubatch;            /* tokens per prefill micro-batch; 0 = the engine's default */
    uint64_t expert_cache_bytes; /* MoE under a budget: bytes for cached experts; 0 = the default */
    const char* io_mode;         /* streaming reads: NULL = default, "direct", "buffered", ... */
} edge_rt_options;

/* Memory the engine holds, by class (bytes). */
typedef struct edge_rt_memory_report {
    uint32_t struct_size;
    uint64_t budget;         /* 0 = unlimited */
    uint64_t total;          /* the sum of the classes below */
    uint64_t pinned_weights; /* resident weights */
    uint64_t window_slots;   /* streaming window (0 when all weights are resident) */
    uint64_t expert_cache;
    uint64_t kv_cache;
    uint64_t scratch;
    uint64_t metadata;                 /* the parsed GGUF metadata and the tokenizer's tables */
    int32_t streaming;                 /* 1 when weights stream from flash */
    int32_t window;                    /* slots in the ring (streaming only) */
    uint64_t streamed_bytes_per_token; /* flash bytes read per decoded token (streaming only) */
} edge_rt_memory_report;

typedef struct edge_rt_model_info {
    uint32_t struct_size;
    int32_t n_vocab;
    int64_t n_ctx;
    int32_t n_layer;
    int32_t n_embd;
    int32_t n_threads;
    int32_t bos_token;    /* -1: none */
    int32_t eos_token;    /* -1: none */
    int32_t can_tokenize; /* 0: edge_rt_tokenize returns EDGE_RT_ERR_UNSUPPORTED for this vocabulary */
    char arch[32];        /* general.architecture, NUL-terminated (truncated) */
    char isa[32];         /* the kernels in use, e.g. "avx2", "scalar" */
} edge_rt_model_info;

/* Called once per generated token, with its text piece (bytes, not NUL-terminated; may be empty or hold part
 * of a UTF-8 character). Return 0 to go on, nonzero to stop: edge_rt_generate then returns
 * EDGE_RT_ERR_CANCELLED with the tokens so far in the result. Runs on the calling thread; must not call
 * edge_rt functions on the same model (they would return EDGE_RT_ERR_INVALID_ARGUMENT: busy). */
typedef int (*edge_rt_token_callback)(int32_t token, const char* piece, size_t piece_len, void* user_data);

typedef enum edge_rt_finish_reason {
    EDGE_RT_FINISH_EOG = 0,      /* the model produced an end-of-generation token (not reported) */
    EDGE_RT_FINISH_LENGTH = 1,   /* max_tokens reached */
    EDGE_RT_FINISH_CONTEXT = 2,  /* the KV cache is full (the last token was reported, not evaluated) */
    EDGE_RT_FINISH_CANCELLED = 3 /* the callback or edge_rt_cancel stopped it */
} edge_rt_finish_reason;

typedef struct edge_rt_generate_result {
    uint32_t struct_size;
    int32_t n_tokens;      /* tokens reported to the callback */
    int32_t finish_reason; /* edge_rt_finish_reason */
    double prefill_seconds;
    double decode_seconds;
} edge_rt_generate_result;

/* ---- versioning -------------------------------------------------------------------------------------- */
EDGE_RT_API int32_t edge_rt_abi_version(void); /* EDGE_RT_ABI_VERSION of the library */
EDGE_RT_API const char* edge_rt_version(void); /* the edge_rt release, e.g. "0.1.0" */

/* ---- errors ------------------------------------------------------------------------------------------ */
/* The message of the last failure on model, or of this thread's last failure when model is NULL (or not a
 * live handle). "" when there was none. */
EDGE_RT_API const char* edge_rt_last_error(const edge_rt_model* model);
EDGE_RT_API const char* edge_rt_status_name(edge_rt_status status); /* "EDGE_RT_ERR_IO", ... */

/* ---- models ------------------------------------------------------------------------------------------ */
EDGE_RT_API void edge_rt_options_init(edge_rt_options* options); /* all defaults, struct_size set */
/* Loads the model; *out is set to the handle on success and to NULL on failure. */
EDGE_RT_API edge_rt_status edge_rt_model_create(const edge_rt_options* options, edge_rt_model** out);
EDGE_RT_API edge_rt_status edge_rt_model_free(edge_rt_model* model);
EDGE_RT_API edge_rt_status edge_rt_model_info_get(edge_rt_model* model, edge_rt_model_info* info);
EDGE_RT_API edge_rt_status edge_rt_memory_report_get(edge_rt_model* model, edge_rt_memory_report* report);
EDGE_RT_API int32_t edge_rt_token_is_eog(edge_rt_model* model, int32_t token); /* 1, 0, or -1 on error */

/* ---- tokens ------------------------------------------------------------------------------------------ */
/* Token ids of text (UTF-8, text_len bytes) into out[0..cap); *n_out = the count (or the size needed).
 * add_special: BOS/EOS where the vocabulary asks for them; parse_special: control-token text becomes the
 * token. Same ids as edge_rt's Python Tokenizer.tokenize; vocabularies whose pre-tokenizer the C tokenizer
 * lacks (the regex ones, see edge_rt/tokenizer.h) give EDGE_RT_ERR_UNSUPPORTED (edge_rt_model_info.can_tokenize). */
EDGE_RT_API edge_rt_status edge_rt_tokenize(edge_rt_model* model, const char* text, size_t text_len, int add_special,
                                            int parse_special, int32_t* out, size_t cap, size_t* n_out);
/* The UTF-8 bytes of ids into out[0..cap) (not NUL-terminated); *n_out = the length (or the size needed).
 * special: include the text of control tokens. */
EDGE_RT_API edge_rt_status edge_rt_detokenize(edge_rt_model* model, const int32_t* ids, size_t n_ids, int special,
                                              char* out, size_t cap, size_t* n_out);

/* ---- evaluation -------------------------------------------------------------------------------------- */
/* Appends tokens to the KV cache (positions n_past .. n_past+n-1) and writes the last token's logits,
 * n_vocab floats, to logits (NULL: not wanted). Argument errors (ids out of range, a full context, a small
 * buffer) leave the KV cache as it was; a failed or cancelled evaluation empties it. */
EDGE_RT_API edge_rt_status edge_rt_eval(edge_rt_model* model, const int32_t* tokens, size_t n_tokens, float* logits,
                                        size_t logits_cap);
EDGE_RT_API edge_rt_status edge_rt_reset(edge_rt_model* model); /* empties the KV cache */
EDGE_RT_API int64_t edge_rt_n_past(edge_rt_model* model);       /* tokens in the KV cache, -1 on error */

/* Greedy generation after prompt (taken as is: no BOS added), from an empty KV cache, as edge_rt's
 * Model.generate_tokens(prompt, max_tokens, temperature=0) yields: stops before an end-of-generation token,
 * after max_tokens (< 0: no limit), or when the KV cache is full. callback may be NULL; result may be NULL.
 * Sampling other than greedy is left to the caller (edge_rt_eval gives the logits). */
EDGE_RT_API edge_rt_status edge_rt_generate(edge_rt_model* model, const int32_t* prompt, size_t n_prompt,
                                            int32_t max_tokens, edge_rt_token_callback callback, void* user_data,
                                            edge_rt_generate_result* result);

/* Asks the edge_rt_eval / edge_rt_generate running on model (from another thread, a signal-safe context
 * excepted) to stop: it returns EDGE_RT_ERR_CANCELLED within one layer's work. A request made while none runs
 * cancels the next one. Never blocks. */
EDGE_RT_API edge_rt_status edge_rt_cancel(edge_rt_model* model);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_RT_H */
