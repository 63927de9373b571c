package dev.edgert.demo;

import android.app.Activity;
import android.os.Bundle;
import android.widget.Button;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;
import dev.edgert.EdgeRtException;
import dev.edgert.EdgeRtModel;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/**
 * Completes a prompt with edge_rt's embedded default model (a small Python-code model): the model is copied
 * from the APK's assets to app storage on first start, loaded once, and generation runs on a background thread,
 * streaming each token's text into the view; Stop cancels it (EdgeRtModel.cancel from the UI thread).
 */
public final class MainActivity extends Activity {
    private static final String MODEL_ASSET = "default.gguf";
    private static final int MAX_TOKENS = 128;

    private EdgeRtModel model;
    private TextView output;
    private Button generate;
    private volatile boolean running;

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        LinearLayout root = new LinearLayout(this);
        root.setOrientation(LinearLayout.VERTICAL);
        EditText prompt = new EditText(this);
        prompt.setText("def fibonacci(n):");
        generate = new Button(this);
        generate.setText("Generate");
        Button stop = new Button(this);
        stop.setText("Stop");
        output = new TextView(this);
        output.setTypeface(android.graphics.Typeface.MONOSPACE);
        ScrollView scroll = new ScrollView(this);
        scroll.addView(output);
        root.addView(prompt);
        root.addView(generate);
        root.addView(stop);
        root.addView(scroll);
        setContentView(root);

        generate.setOnClickListener(v -> start(prompt.getText().toString()));
        stop.setOnClickListener(v -> {
            if (model != null && running) model.cancel();
        });
    }

    private void start(String prompt) {
        if (running) return;
        running = true;
        generate.setEnabled(false);
        output.setText(prompt);
        new Thread(() -> {
            String status;
            try {
                if (model == null) model = new EdgeRtModel(copyModel().getPath(), 0, 0, 0);
                CharsetDecoder utf8 = StandardCharsets.UTF_8.newDecoder()
                        .onMalformedInput(CodingErrorAction.REPLACE)
                        .onUnmappableCharacter(CodingErrorAction.REPLACE);
                ByteBuffer pending = ByteBuffer.allocate(64);
                long t0 = System.nanoTime();
                int[] tokens = model.generate(model.tokenize(prompt, true, false), MAX_TOKENS, (token, piece) -> {
                    append(utf8, pending, piece);
                    return false;
                });
                double s = (System.nanoTime() - t0) / 1e9;
                status = String.format("\n\n[%d tokens, %.1f tokens/s]", tokens.length, tokens.length / s);
            } catch (EdgeRtException e) {
                status = "\n\n[" + e.getMessage() + "]";
            } catch (IOException e) {
                status = "\n\n[cannot copy the model: " + e.getMessage() + "]";
            }
            final String end = status;
            runOnUiThread(() -> {
                output.append(end);
                generate.setEnabled(true);
            });
            running = false;
        }).start();
    }

    /** Decodes a token's bytes, keeping an incomplete UTF-8 character for the next token. */
    private void append(CharsetDecoder utf8, ByteBuffer pending, byte[] piece) {
        if (pending.remaining() < piece.length) pending.clear();  // a piece longer than any character: restart
        pending.put(piece);
        pending.flip();
        CharBuffer chars = CharBuffer.allocate(pending.remaining() + 1);
        utf8.decode(pending, chars, false);
        pending.compact();
        chars.flip();
        final String text = chars.toString();
        if (!text.isEmpty()) runOnUiThread(() -> output.append(text));
    }

    private File copyModel() throws IOException {
        File file = new File(getFilesDir(), MODEL_ASSET);
        if (file.isFile()) return file;
        File tmp = new File(getFilesDir(), MODEL_ASSET + ".tmp");
        try (InputStream in = getAssets().open(MODEL_ASSET); OutputStream out = new FileOutputStream(tmp)) {
            byte[] buf = new byte[1 << 16];
            for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
        }
        if (!tmp.renameTo(file)) throw new IOException("rename " + tmp + " -> " + file);
        return file;
    }

    @Override
    protected void onDestroy() {
        if (model != null) {
            model.cancel();
            model.close();  // a running generation stops at its next check; the library frees the model then
        }
        super.onDestroy();
    }
}
