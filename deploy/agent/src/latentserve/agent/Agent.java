package latentserve.agent;

import java.lang.instrument.Instrumentation;
import java.util.Map;
import java.util.Set;

/**
 * latentserve's JVM agent for TorchServe 0.12 (passed as -javaagent in the config's vmargs).
 *
 * <p>It adds what the Open Inference Protocol requires and TorchServe's frontend lacks: model
 * metadata and readiness, {@code GET /v2/models/<name>[/versions/<v>][/ready]}, answered from
 * the {@code v2-metadata.json} that every latentserve archive carries (see {@link Metadata}).
 * The frontend's request handler is rewritten at load time ({@link Rewrite}); if its class
 * does not have the exact shape this agent was written against, the JVM exits with a message
 * instead of serving without the endpoint.
 */
public final class Agent {
    private Agent() {}

    public static void premain(String args, Instrumentation inst) {
        // The JDK's own ASM is not exported to class-path code: export it to this agent
        // (no --add-exports flag needed on the command line).
        Module base = Object.class.getModule();
        Module self = Agent.class.getModule();
        inst.redefineModule(
                base,
                Set.of(),
                Map.of(Rewrite.ASM_PACKAGE, Set.of(self), Rewrite.ASM_PACKAGE + ".commons", Set.of(self)),
                Map.of(),
                Set.of(),
                Map.of());
        inst.addTransformer(new Rewrite(), false);
    }
}
