package dev.edgert;

import java.nio.charset.StandardCharsets;

/** A failure reported by the edge_rt C ABI: its status code and name, and the library's message. */
public final class EdgeRtException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The edge_rt_status value (edge_rt.h), e.g. 2 for EDGE_RT_ERR_MODEL_FORMAT. */
    public final int status;
    /** The status's name, e.g. "EDGE_RT_ERR_MODEL_FORMAT". */
    public final String statusName;

    /** Called by the JNI bridge; the message arrives as UTF-8 bytes (it may quote a model file's text). */
    EdgeRtException(int status, String statusName, byte[] message) {
        super(statusName + ": " + new String(message, StandardCharsets.UTF_8));
        this.status = status;
        this.statusName = statusName;
    }
}
