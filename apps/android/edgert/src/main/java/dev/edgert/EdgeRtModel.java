package dev.edgert;

import java.nio.charset.StandardCharsets;

/**
 * A GGUF model loaded by edge_rt through its C ABI (libedge_rt.so) and the JNI bridge (libedge_rt_jni.so).
 *
 * <p>Plain Java (no Android API), so the same class runs on a desktop JVM and in an Android app. Calls on one
 * model are serialized by the library; {@link #cancel()} may be called from any thread. Every failure is an
 * {@link EdgeRtException}; after {@link #close()} every call throws one (EDGE_RT_ERR_INVALID_HANDLE).
 */
public final class EdgeRtModel implements AutoCloseable {
    static {
        // On Android both libraries come from the APK; on a desktop JVM from -Djava.library.path.
        System.loadLibrary("edge_rt");
        System.loadLibrary("edge_rt_jni");
    }

    /** The C ABI version this class was written against (EDGE_RT_ABI_VERSION). */
    public static final int ABI_VERSION = 1;

    private volatile long handle;
    private final int nVocab;
    private final long nCtx;

    /**
     * Loads a model.
     *
     * @param path the GGUF file
     * @param nCtx KV cache capacity in tokens (0: min(2048, the model's training context))
     * @param threads worker threads (0: the CPUs this process may use, at most 8)
     * @param memBudget hard cap on the engine's memory in bytes (0: none)
     */
    public EdgeRtModel(String path, long nCtx, int threads, long memBudget) {
        if (nativeAbiVersion() != ABI_VERSION) {
            throw new IllegalStateException("libedge_rt ABI " + nativeAbiVersion() + ", expected " + ABI_VERSION);
        }
        byte[] p = path == null ? null : path.getBytes(StandardCharsets.UTF_8);
        this.handle = nativeCreate(p, nCtx, threads, memBudget);
        long[] info = nativeInfo(handle);
        this.nVocab = (int) info[0];
        this.nCtx = info[1];
    }

    public int nVocab() { return nVocab; }

    public long nCtx() { return nCtx; }

    /** {n_vocab, n_ctx, n_layer, n_embd, n_threads, bos, eos, can_tokenize}, as edge_rt_model_info. */
    public long[] info() { return nativeInfo(handle); }

    /** {budget, total, pinned_weights, window_slots, expert_cache, kv_cache, scratch, streaming} in bytes. */
    public long[] memoryReport() { return nativeMemoryReport(handle); }

    public int[] tokenize(String text, boolean addSpecial, boolean parseSpecial) {
        return nativeTokenize(handle, text.getBytes(StandardCharsets.UTF_8), addSpecial, parseSpecial);
    }

    public byte[] detokenizeBytes(int[] ids, boolean special) { return nativeDetokenize(handle, ids, special); }

    public String detokenize(int[] ids) { return new String(detokenizeBytes(ids, false), StandardCharsets.UTF_8); }

    /**
     * Greedy generation after prompt from an empty context: the ids edge_rt's Python
     * Model.generate_tokens(prompt, maxTokens, temperature=0) yields.
     *
     * @param maxTokens the most tokens to generate (negative: until end of generation or a full context)
     * @param listener called per token (may be null); returning true cancels
     */
    public int[] generate(int[] prompt, int maxTokens, TokenListener listener) {
        return nativeGenerate(handle, prompt, maxTokens, listener);
    }

    /** Stops the generation running on this model (from another thread), or the next one. */
    public void cancel() { nativeCancel(handle); }

    @Override
    public void close() {
        long h = handle;
        handle = 0;
        if (h != 0) nativeFree(h);
    }

    private static native int nativeAbiVersion();
    private static native long nativeCreate(byte[] path, long nCtx, int threads, long memBudget);
    private static native void nativeFree(long handle);
    private static native void nativeCancel(long handle);
    private static native long[] nativeInfo(long handle);
    private static native long[] nativeMemoryReport(long handle);
    private static native int[] nativeTokenize(long handle, byte[] utf8, boolean addSpecial, boolean parseSpecial);
    private static native byte[] nativeDetokenize(long handle, int[] ids, boolean special);
    private static native int[] nativeGenerate(long handle, int[] prompt, int maxTokens, TokenListener listener);
}
