package dev.edgert;

/** Receives each generated token on the generating thread. */
@FunctionalInterface
public interface TokenListener {
    /**
     * @param token the token id
     * @param piece its UTF-8 bytes (may be empty, or part of a multi-byte character: use a
     *     java.nio.charset.CharsetDecoder across calls to get text)
     * @return true to stop the generation (generate then throws EdgeRtException EDGE_RT_ERR_CANCELLED)
     */
    boolean onToken(int token, byte[] piece);
}
