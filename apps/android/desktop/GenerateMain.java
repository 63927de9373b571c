import dev.edgert.EdgeRtException;
import dev.edgert.EdgeRtModel;
import java.io.ByteArrayOutputStream;

/**
 * Drives dev.edgert.EdgeRtModel on a desktop JVM, as the Android app does on a phone: loads a model, tokenizes
 * a prompt, generates greedily, and prints what tests/test_android_jni.py compares with edge_rt's Python API.
 *
 * <p>Usage: java -Djava.library.path=DIR -cp CLASSES GenerateMain MODEL THREADS MAX_TOKENS PROMPT [CANCEL_AFTER]
 *
 * <p>Prints one line per fact: "PROMPT_IDS ids...", "TOKENS ids...", "PIECES_HEX hex" (the listener's bytes),
 * "TEXT_HEX hex" (detokenized), "MEMORY total kv_cache", then "AFTER_CLOSE status". With CANCEL_AFTER the
 * listener stops after that many tokens: "CANCELLED status count". A failure prints "ERROR status message"
 * and exits with 3.
 */
public final class GenerateMain {
    private static String hex(byte[] bytes) {
        StringBuilder sb = new StringBuilder();
        for (byte b : bytes) sb.append(String.format("%02x", b & 0xff));
        return sb.toString();
    }

    private static String ids(int[] values) {
        StringBuilder sb = new StringBuilder();
        for (int v : values) sb.append(' ').append(v);
        return sb.toString();
    }

    public static void main(String[] args) throws Exception {
        String path = args[0];
        int threads = Integer.parseInt(args[1]);
        int maxTokens = Integer.parseInt(args[2]);
        String prompt = args[3];
        int cancelAfter = args.length > 4 ? Integer.parseInt(args[4]) : -1;
        EdgeRtModel model;
        try {
            model = new EdgeRtModel(path, 0, threads, 0);
        } catch (EdgeRtException e) {
            System.out.println("ERROR " + e.statusName + " " + e.getMessage());
            System.exit(3);
            return;
        }
        try {
            int[] promptIds = model.tokenize(prompt, true, false);
            System.out.println("PROMPT_IDS" + ids(promptIds));
            ByteArrayOutputStream pieces = new ByteArrayOutputStream();
            int[] count = {0};
            try {
                int[] tokens = model.generate(promptIds, maxTokens, (token, piece) -> {
                    pieces.write(piece, 0, piece.length);
                    count[0]++;
                    return cancelAfter >= 0 && count[0] >= cancelAfter;
                });
                System.out.println("TOKENS" + ids(tokens));
                System.out.println("TEXT_HEX " + hex(model.detokenizeBytes(tokens, false)));
            } catch (EdgeRtException e) {
                System.out.println("CANCELLED " + e.statusName + " " + count[0]);
            }
            System.out.println("PIECES_HEX " + hex(pieces.toByteArray()));
            long[] mem = model.memoryReport();
            System.out.println("MEMORY " + mem[1] + " " + mem[5]);
        } finally {
            model.close();
        }
        try {
            model.tokenize("x", false, false);
            System.out.println("AFTER_CLOSE none");
        } catch (EdgeRtException e) {
            System.out.println("AFTER_CLOSE " + e.statusName);
        }
    }
}
