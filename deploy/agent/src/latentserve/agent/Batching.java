package latentserve.agent;

import java.util.concurrent.LinkedBlockingDeque;
import java.util.concurrent.TimeUnit;

/**
 * Greedy batching: how TorchServe's {@code Model} fills a batch after its first job.
 *
 * <p>TorchServe 0.12 blocks for a batch's first job, then calls {@code poll(remaining
 * maxBatchDelay, MILLISECONDS)} for each further one, so a lone request always waits the
 * whole delay. The agent sends that one call (in {@code pollBatch} and in {@code
 * pollInferJob}) here: greedy (the default) takes what is queued now, without waiting, so
 * a batch is whatever arrived while the worker was busy, up to batchSize, and a lone
 * request leaves at once; {@code -Dlatentserve.batching=timed} (in the config's vmargs)
 * keeps TorchServe's own wait.
 */
public final class Batching {
    static final String PROPERTY = "latentserve.batching";
    static final boolean GREEDY = mode().equals("greedy");

    private Batching() {}

    static String mode() {
        String mode = System.getProperty(PROPERTY, "greedy");
        if (!mode.equals("greedy") && !mode.equals("timed")) {
            Agent.refuse("-D" + PROPERTY + "=" + mode + ": expected greedy or timed");
        }
        return mode;
    }

    /** The batch-filling poll: non-blocking when greedy, else TorchServe's timed wait. */
    public static <T> T fill(LinkedBlockingDeque<T> queue, long timeout, TimeUnit unit)
            throws InterruptedException {
        return GREEDY ? queue.poll() : queue.poll(timeout, unit);
    }
}
