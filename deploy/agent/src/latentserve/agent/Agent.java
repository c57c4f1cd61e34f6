package latentserve.agent;

import java.lang.instrument.Instrumentation;
import java.util.Map;
import java.util.Set;

/**
 * latentserve's JVM agent for TorchServe 0.12 (passed as -javaagent in the config's vmargs).
 *
 * <p>It adds what the Open Inference Protocol requires and TorchServe's frontend lacks: model
 * metadata and readiness, {@code GET /v2/models/<name>[/versions/<v>][/ready]}, answered from
 * the {@code v2-metadata.json} that every latentserve archive carries (see {@link Metadata});
 * and greedy batching ({@link Batching}). The frontend's request handler and {@code Model}
 * are rewritten at load time ({@link Rewrite}); if a class does not have the exact shape this
 * agent was written against, the JVM exits with a message instead of serving without them.
 */
public final class Agent {
    private Agent() {}

    public static void premain(String args, Instrumentation inst) {
        Batching.mode(); // a bad -Dlatentserve.batching stops the JVM now, not at a request
        // The JDK's own ASM is not exported to class-path code: export it to this agent
        // (no --add-exports flag needed on the command line).
        Module base = Object.class.getModule();
        Module self = Agent.class.getModule();
        inst.redefineModule(
                base,
                Set.of(),
                Map.of(Rewrite.ASM_PACKAGE, Set.of(self)),
                Map.of(),
                Set.of(),
                Map.of());
        inst.addTransformer(new Rewrite(), false);
    }

    /** Stop the JVM before it serves anything, saying why (exit code 3). */
    static void refuse(String why) {
        System.err.println("latentserve-agent: refusing to start: " + why);
        System.err.flush();
        Runtime.getRuntime().halt(3);
    }
}
