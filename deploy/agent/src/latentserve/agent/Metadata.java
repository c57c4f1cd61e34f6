package latentserve.agent;

import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.pytorch.serve.util.NettyUtils;
import org.pytorch.serve.wlm.Model;
import org.pytorch.serve.wlm.ModelManager;
import org.pytorch.serve.wlm.ModelVersionName;

/**
 * The Open Inference Protocol's health, model metadata and readiness on TorchServe's inference port.
 *
 * <ul>
 *   <li>{@code GET /v2}: server metadata; {@code GET /v2/health/live}: 200 while the
 *       frontend answers; {@code GET /v2/health/ready}: 200 when every model has a healthy
 *       worker, else 503.
 *   <li>{@code GET /v2/models/<name>} (or {@code .../versions/<v>}): the archive's
 *       {@code v2-metadata.json} (name, versions, platform, inputs, outputs), written by
 *       serving/archive.py from the model's manifest; 404 for an unknown model or version.
 *   <li>{@code GET /v2/models/<name>[/versions/<v>]/ready}: 200 when a worker of the model
 *       is healthy, else 503.
 * </ul>
 *
 * Called first by the rewritten {@code InferenceRequestHandler.handleRequest}, after the
 * frontend's token check; returns false for every other request.
 */
public final class Metadata {
    static final String FILE = "v2-metadata.json";

    private Metadata() {}

    public static boolean answer(ChannelHandlerContext ctx, FullHttpRequest req, String[] seg) {
        if (!HttpMethod.GET.equals(req.method()) || seg.length < 2 || !"v2".equals(seg[1])) {
            return false;
        }
        if (seg.length == 2) { // server metadata
            NettyUtils.sendJsonResponse(ctx, "{\"name\":\"latentserve\",\"version\":\"0.1.0\","
                    + "\"extensions\":[\"binary_tensor_data\"]}");
            return true;
        }
        if (seg.length == 4 && "health".equals(seg[2])) {
            return health(ctx, seg[3]);
        }
        if (seg.length < 4 || !"models".equals(seg[2])) {
            return false;
        }
        String name = seg[3];
        String version = null;
        int end = 4;
        if (seg.length >= 6 && "versions".equals(seg[4])) {
            version = seg[5];
            end = 6;
        }
        boolean ready = seg.length == end + 1 && "ready".equals(seg[end]);
        if (!ready && seg.length != end) {
            return false;
        }
        Model model;
        try {
            model = ModelManager.getInstance().getModel(name, version);
        } catch (Exception notFound) { // ModelVersionNotFoundException: an unknown version
            model = null;
        }
        if (model == null) {
            error(ctx, HttpResponseStatus.NOT_FOUND, "model " + name
                    + (version == null ? "" : " version " + version) + " is not served here");
            return true;
        }
        if (ready) {
            ModelVersionName id = new ModelVersionName(model.getModelName(), model.getVersion());
            boolean up = ModelManager.getInstance().getNumHealthyWorkers(id) > 0;
            NettyUtils.sendJsonResponse(
                    ctx,
                    "{\"name\":\"" + model.getModelName() + "\",\"ready\":" + up + "}",
                    up ? HttpResponseStatus.OK : HttpResponseStatus.SERVICE_UNAVAILABLE);
            return true;
        }
        Path file = model.getModelDir().toPath().resolve(FILE);
        try {
            NettyUtils.sendJsonResponse(
                    ctx, new String(Files.readAllBytes(file), StandardCharsets.UTF_8));
        } catch (IOException err) {
            error(ctx, HttpResponseStatus.NOT_FOUND, "model " + name
                    + " has no " + FILE + " (an archive not built by serving/archive.py)");
        }
        return true;
    }

    /** live: the frontend answers; ready: every registered model has a healthy worker. */
    private static boolean health(ChannelHandlerContext ctx, String what) {
        if ("live".equals(what)) {
            NettyUtils.sendJsonResponse(ctx, "{\"live\":true}");
            return true;
        }
        if (!"ready".equals(what)) {
            return false;
        }
        ModelManager manager = ModelManager.getInstance();
        boolean up = true;
        for (Model model : manager.getDefaultModels().values()) {
            ModelVersionName id = new ModelVersionName(model.getModelName(), model.getVersion());
            up &= manager.getNumHealthyWorkers(id) > 0;
        }
        NettyUtils.sendJsonResponse(
                ctx,
                "{\"ready\":" + up + "}",
                up ? HttpResponseStatus.OK : HttpResponseStatus.SERVICE_UNAVAILABLE);
        return true;
    }

    private static void error(ChannelHandlerContext ctx, HttpResponseStatus status, String msg) {
        String json = "{\"error\":\"" + msg.replace("\\", "\\\\").replace("\"", "\\\"") + "\"}";
        NettyUtils.sendJsonResponse(ctx, json, status);
    }
}
