/* JNI bridge: dev.edgert.EdgeRtModel's native methods over the C ABI (native/include/edge_rt/edge_rt.h).
 *
 * Contract
 *  - A model is a Java long holding the edge_rt_model* handle; the C ABI validates it (a freed or zero handle
 *    is EDGE_RT_ERR_INVALID_HANDLE, never a crash), so the bridge passes it through unchecked.
 *  - Every failure becomes a dev.edgert.EdgeRtException(status, statusName, message) thrown into Java; no
 *    status is dropped. Text crosses as UTF-8 byte[] both ways (JNI's NewStringUTF speaks modified UTF-8,
 *    which garbles characters outside the BMP).
 *  - nativeGenerate calls listener.onToken(int, byte[]) on the calling thread; true from it, or an exception
 *    thrown in it, cancels the generation (the listener's exception is the one Java sees).
 *  - Built here for x86-64 against OpenJDK (tests/test_android_jni.py), on Android by the NDK (CMakeLists.txt
 *    beside this file).
 */
#include <jni.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edge_rt/edge_rt.h"

#define EDGE_RT_JNI(name) Java_dev_edgert_EdgeRtModel_##name

static edge_rt_model* handle_of(jlong h) { return (edge_rt_model*)(intptr_t)h; }

/* Throws EdgeRtException for status with the model's (or this thread's) last error. Returns 0 for convenience. */
static jint throw_status(JNIEnv* env, edge_rt_status status, edge_rt_model* model) {
    if ((*env)->ExceptionCheck(env)) return 0; /* a Java exception (a listener's) is already on its way */
    jclass cls = (*env)->FindClass(env, "dev/edgert/EdgeRtException");
    if (!cls) return 0;
    jmethodID ctor = (*env)->GetMethodID(env, cls, "<init>", "(ILjava/lang/String;[B)V");
    if (!ctor) return 0;
    const char* message = edge_rt_last_error(model);
    const jsize len = (jsize)strlen(message);
    jbyteArray bytes = (*env)->NewByteArray(env, len);
    if (!bytes) return 0;
    (*env)->SetByteArrayRegion(env, bytes, 0, len, (const jbyte*)message);
    jstring name = (*env)->NewStringUTF(env, edge_rt_status_name(status)); /* ASCII */
    if (!name) return 0;
    jobject err = (*env)->NewObject(env, cls, ctor, (jint)status, name, bytes);
    if (err) (*env)->Throw(env, (jthrowable)err);
    return 0;
}

static jintArray to_int_array(JNIEnv* env, const int32_t* values, size_t n) {
    jintArray out = (*env)->NewIntArray(env, (jsize)n);
    if (out && n) (*env)->SetIntArrayRegion(env, out, 0, (jsize)n, (const jint*)values);
    return out;
}

static jbyteArray to_byte_array(JNIEnv* env, const char* data, size_t n) {
    jbyteArray out = (*env)->NewByteArray(env, (jsize)n);
    if (out && n) (*env)->SetByteArrayRegion(env, out, 0, (jsize)n, (const jbyte*)data);
    return out;
}

JNIEXPORT jint JNICALL EDGE_RT_JNI(nativeAbiVersion)(JNIEnv* env, jclass cls) {
    (void)env;
    (void)cls;
    return edge_rt_abi_version();
}

JNIEXPORT jlong JNICALL EDGE_RT_JNI(nativeCreate)(JNIEnv* env, jclass cls, jbyteArray path, jlong n_ctx, jint n_threads,
                                                  jlong mem_budget) {
    (void)cls;
    edge_rt_options opts;
    edge_rt_options_init(&opts);
    char* cpath = NULL;
    if (path) {
        const jsize len = (*env)->GetArrayLength(env, path);
        cpath = (char*)malloc((size_t)len + 1);
        if (!cpath) {
            (*env)->ThrowNew(env, (*env)->FindClass(env, "java/lang/OutOfMemoryError"), "edge_rt: path");
            return 0;
        }
        (*env)->GetByteArrayRegion(env, path, 0, len, (jbyte*)cpath);
        cpath[len] = '\0';
    }
    opts.model_path = cpath;
    opts.n_ctx = n_ctx;
    opts.n_threads = n_threads;
    opts.mem_budget = (uint64_t)mem_budget;
    edge_rt_model* model = NULL;
    const edge_rt_status status = edge_rt_model_create(&opts, &model);
    free(cpath);
    if (status != EDGE_RT_OK) return throw_status(env, status, NULL);
    return (jlong)(intptr_t)model;
}

JNIEXPORT void JNICALL EDGE_RT_JNI(nativeFree)(JNIEnv* env, jclass cls, jlong h) {
    (void)cls;
    const edge_rt_status status = edge_rt_model_free(handle_of(h));
    if (status != EDGE_RT_OK) throw_status(env, status, NULL);
}

JNIEXPORT void JNICALL EDGE_RT_JNI(nativeCancel)(JNIEnv* env, jclass cls, jlong h) {
    (void)cls;
    const edge_rt_status status = edge_rt_cancel(handle_of(h));
    if (status != EDGE_RT_OK) throw_status(env, status, NULL);
}

/* {n_vocab, n_ctx, n_layer, n_embd, n_threads, bos, eos, can_tokenize} */
JNIEXPORT jlongArray JNICALL EDGE_RT_JNI(nativeInfo)(JNIEnv* env, jclass cls, jlong h) {
    (void)cls;
    edge_rt_model_info info;
    memset(&info, 0, sizeof(info));
    info.struct_size = sizeof(info);
    const edge_rt_status status = edge_rt_model_info_get(handle_of(h), &info);
    if (status != EDGE_RT_OK) return (throw_status(env, status, handle_of(h)), NULL);
    const jlong values[8] = {info.n_vocab,   info.n_ctx,     info.n_layer,   info.n_embd,
                             info.n_threads, info.bos_token, info.eos_token, info.can_tokenize};
    jlongArray out = (*env)->NewLongArray(env, 8);
    if (out) (*env)->SetLongArrayRegion(env, out, 0, 8, values);
    return out;
}

/* {budget, total, pinned_weights, window_slots, expert_cache, kv_cache, scratch, streaming} */
JNIEXPORT jlongArray JNICALL EDGE_RT_JNI(nativeMemoryReport)(JNIEnv* env, jclass cls, jlong h) {
    (void)cls;
    edge_rt_memory_report r;
    memset(&r, 0, sizeof(r));
    r.struct_size = sizeof(r);
    const edge_rt_status status = edge_rt_memory_report_get(handle_of(h), &r);
    if (status != EDGE_RT_OK) return (throw_status(env, status, handle_of(h)), NULL);
    const jlong values[8] = {(jlong)r.budget,       (jlong)r.total,    (jlong)r.pinned_weights, (jlong)r.window_slots,
                             (jlong)r.expert_cache, (jlong)r.kv_cache, (jlong)r.scratch,        r.streaming};
    jlongArray out = (*env)->NewLongArray(env, 8);
    if (out) (*env)->SetLongArrayRegion(env, out, 0, 8, values);
    return out;
}

JNIEXPORT jintArray JNICALL EDGE_RT_JNI(nativeTokenize)(JNIEnv* env, jclass cls, jlong h, jbyteArray utf8,
                                                        jboolean add_special, jboolean parse_special) {
    (void)cls;
    const jsize len = utf8 ? (*env)->GetArrayLength(env, utf8) : 0;
    jbyte* text = utf8 ? (*env)->GetByteArrayElements(env, utf8, NULL) : NULL;
    size_t cap = (size_t)len + 8, n = 0;
    int32_t* ids = NULL;
    edge_rt_status status;
    for (;;) {
        int32_t* grown = (int32_t*)realloc(ids, cap * sizeof(int32_t));
        if (!grown) {
            status = EDGE_RT_ERR_OUT_OF_MEMORY;
            break;
        }
        ids = grown;
        status =
            edge_rt_tokenize(handle_of(h), (const char*)text, (size_t)len, add_special, parse_special, ids, cap, &n);
        if (status != EDGE_RT_ERR_BUFFER_TOO_SMALL) break;
        cap = n;
    }
    if (text) (*env)->ReleaseByteArrayElements(env, utf8, text, JNI_ABORT);
    jintArray out = status == EDGE_RT_OK ? to_int_array(env, ids, n) : NULL;
    free(ids);
    if (status != EDGE_RT_OK) throw_status(env, status, handle_of(h));
    return out;
}

JNIEXPORT jbyteArray JNICALL EDGE_RT_JNI(nativeDetokenize)(JNIEnv* env, jclass cls, jlong h, jintArray ids,
                                                           jboolean special) {
    (void)cls;
    const jsize n_ids = ids ? (*env)->GetArrayLength(env, ids) : 0;
    jint* tokens = ids ? (*env)->GetIntArrayElements(env, ids, NULL) : NULL;
    size_t cap = 16 * (size_t)n_ids + 16, n = 0;
    char* text = NULL;
    edge_rt_status status;
    for (;;) {
        char* grown = (char*)realloc(text, cap);
        if (!grown) {
            status = EDGE_RT_ERR_OUT_OF_MEMORY;
            break;
        }
        text = grown;
        status = edge_rt_detokenize(handle_of(h), (const int32_t*)tokens, (size_t)n_ids, special, text, cap, &n);
        if (status != EDGE_RT_ERR_BUFFER_TOO_SMALL) break;
        cap = n;
    }
    if (tokens) (*env)->ReleaseIntArrayElements(env, ids, tokens, JNI_ABORT);
    jbyteArray out = status == EDGE_RT_OK ? to_byte_array(env, text, n) : NULL;
    free(text);
    if (status != EDGE_RT_OK) throw_status(env, status, handle_of(h));
    return out;
}

/* What the token callback needs: the listener to call and the tokens generated so far. */
struct generation {
    JNIEnv* env;
    jobject listener; /* may be NULL */
    jmethodID on_token;
    int32_t* tokens;
    size_t n, cap;
    int out_of_memory;
    int listener_threw;
};

static int on_token(int32_t token, const char* piece, size_t piece_len, void* user_data) {
    struct generation* g = (struct generation*)user_data;
    if (g->n == g->cap) {
        const size_t cap = g->cap ? 2 * g->cap : 64;
        int32_t* grown = (int32_t*)realloc(g->tokens, cap * sizeof(int32_t));
        if (!grown) {
            g->out_of_memory = 1;
            return 1;
        }
        g->tokens = grown;
        g->cap = cap;
    }
    g->tokens[g->n++] = token;
    if (!g->listener) return 0;
    JNIEnv* env = g->env;
    jbyteArray bytes = to_byte_array(env, piece, piece_len);
    if (!bytes) {
        g->listener_threw = 1; /* OutOfMemoryError pending */
        return 1;
    }
    const jboolean stop = (*env)->CallBooleanMethod(env, g->listener, g->on_token, (jint)token, bytes);
    (*env)->DeleteLocalRef(env, bytes);
    if ((*env)->ExceptionCheck(env)) {
        g->listener_threw = 1;
        return 1;
    }
    return stop ? 1 : 0;
}

/* Greedy generation (edge_rt_generate); returns the generated ids, or throws: the listener's exception,
 * or EdgeRtException (status EDGE_RT_ERR_CANCELLED when the listener or nativeCancel stopped it; the listener
 * has seen the tokens generated until then). */
JNIEXPORT jintArray JNICALL EDGE_RT_JNI(nativeGenerate)(JNIEnv* env, jclass cls, jlong h, jintArray prompt,
                                                        jint max_tokens, jobject listener) {
    (void)cls;
    struct generation g;
    memset(&g, 0, sizeof(g));
    g.env = env;
    g.listener = listener;
    if (listener) {
        jclass lc = (*env)->GetObjectClass(env, listener);
        g.on_token = (*env)->GetMethodID(env, lc, "onToken", "(I[B)Z");
        if (!g.on_token) return NULL; /* NoSuchMethodError pending */
    }
    const jsize n_prompt = prompt ? (*env)->GetArrayLength(env, prompt) : 0;
    jint* ids = prompt ? (*env)->GetIntArrayElements(env, prompt, NULL) : NULL;
    edge_rt_generate_result result;
    memset(&result, 0, sizeof(result));
    result.struct_size = sizeof(result);
    const edge_rt_status status =
        edge_rt_generate(handle_of(h), (const int32_t*)ids, (size_t)n_prompt, max_tokens, on_token, &g, &result);
    if (ids) (*env)->ReleaseIntArrayElements(env, prompt, ids, JNI_ABORT);
    jintArray out = NULL;
    if (g.out_of_memory) {
        (*env)->ThrowNew(env, (*env)->FindClass(env, "java/lang/OutOfMemoryError"), "edge_rt: generated tokens");
    } else if (status == EDGE_RT_OK && !g.listener_threw) {
        out = to_int_array(env, g.tokens, g.n);
    } else {
        throw_status(env, status, handle_of(h)); /* no-op when the listener's exception is pending */
    }
    free(g.tokens);
    return out;
}
