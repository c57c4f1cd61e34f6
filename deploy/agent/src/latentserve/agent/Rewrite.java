package latentserve.agent;

import java.lang.instrument.ClassFileTransformer;
import java.security.ProtectionDomain;
import java.util.HashMap;
import java.util.Map;
import jdk.internal.org.objectweb.asm.ClassReader;
import jdk.internal.org.objectweb.asm.ClassVisitor;
import jdk.internal.org.objectweb.asm.ClassWriter;
import jdk.internal.org.objectweb.asm.Label;
import jdk.internal.org.objectweb.asm.MethodVisitor;
import jdk.internal.org.objectweb.asm.Opcodes;

/**
 * The two rewrites, each checked against the exact class shape it was written for:
 *
 * <ul>
 *   <li>{@code InferenceRequestHandler.handleRequest(ctx, req, decoder, segments)} gets
 *       {@code if (Metadata.answer(ctx, req, segments)) return;} first, so that a metadata or
 *       readiness request of the Open Inference Protocol is answered before the frontend's own
 *       routing, which sends it to a 404. Every other request runs the original method.
 *   <li>In {@code Model.pollBatch} and {@code Model.pollInferJob(Map, int, LinkedBlockingDeque)}
 *       the last {@code LinkedBlockingDeque.poll(long, TimeUnit)}, the one that fills a batch
 *       after its first job, becomes {@code Batching.fill(queue, timeout, unit)} (greedy
 *       batching); the first-job waits before it stay as they are.
 * </ul>
 */
final class Rewrite implements ClassFileTransformer {
    static final String ASM_PACKAGE = "jdk.internal.org.objectweb.asm";
    static final String TARGET = "org/pytorch/serve/http/api/rest/InferenceRequestHandler";
    static final String METHOD = "handleRequest";
    static final String DESCRIPTOR =
            "(Lio/netty/channel/ChannelHandlerContext;Lio/netty/handler/codec/http/FullHttpRequest;"
                    + "Lio/netty/handler/codec/http/QueryStringDecoder;[Ljava/lang/String;)V";
    static final String HOOK = "latentserve/agent/Metadata";
    static final String HOOK_DESCRIPTOR =
            "(Lio/netty/channel/ChannelHandlerContext;Lio/netty/handler/codec/http/FullHttpRequest;"
                    + "[Ljava/lang/String;)Z";
    static final String MODEL = "org/pytorch/serve/wlm/Model";
    static final String DEQUE = "java/util/concurrent/LinkedBlockingDeque";
    static final String TIMED_POLL = "(JLjava/util/concurrent/TimeUnit;)Ljava/lang/Object;";
    static final String FILL = "latentserve/agent/Batching";
    static final String FILL_DESCRIPTOR =
            "(Ljava/util/concurrent/LinkedBlockingDeque;JLjava/util/concurrent/TimeUnit;)"
                    + "Ljava/lang/Object;";
    /** method name + descriptor -> how many timed polls it has in TorchServe 0.12.0. */
    static final Map<String, Integer> FILL_METHODS =
            Map.of(
                    "pollBatch(Ljava/lang/String;JLjava/util/Map;)V", 3,
                    "pollInferJob(Ljava/util/Map;ILjava/util/concurrent/LinkedBlockingDeque;)V", 2);

    @Override
    public byte[] transform(
            ClassLoader loader,
            String className,
            Class<?> redefined,
            ProtectionDomain domain,
            byte[] bytes) {
        try {
            if (TARGET.equals(className)) {
                return rewrite(bytes);
            }
            if (MODEL.equals(className)) {
                return greedy(bytes);
            }
        } catch (Throwable err) {
            refuse("could not rewrite " + className + ": " + err);
        }
        return null;
    }

    /** The timed polls of each of FILL_METHODS, counted: {name+desc: count}. */
    static Map<String, Integer> timedPolls(ClassReader reader) {
        Map<String, Integer> counts = new HashMap<>();
        reader.accept(
                new ClassVisitor(Opcodes.ASM8) {
                    @Override
                    public MethodVisitor visitMethod(
                            int access, String name, String desc, String sig, String[] exc) {
                        String key = name + desc;
                        if (!FILL_METHODS.containsKey(key)) {
                            return null;
                        }
                        counts.put(key, 0);
                        return new MethodVisitor(Opcodes.ASM8) {
                            @Override
                            public void visitMethodInsn(
                                    int op, String owner, String n, String d, boolean itf) {
                                if (isTimedPoll(op, owner, n, d)) {
                                    counts.merge(key, 1, Integer::sum);
                                }
                            }
                        };
                    }
                },
                0);
        return counts;
    }

    static boolean isTimedPoll(int op, String owner, String name, String desc) {
        return op == Opcodes.INVOKEVIRTUAL && DEQUE.equals(owner) && "poll".equals(name)
                && TIMED_POLL.equals(desc);
    }

    static byte[] greedy(byte[] bytes) {
        ClassReader reader = new ClassReader(bytes);
        Map<String, Integer> counts = timedPolls(reader);
        if (!counts.equals(FILL_METHODS)) {
            refuse(MODEL + " has timed polls " + counts + " (expected exactly " + FILL_METHODS
                    + "): this agent is written for TorchServe 0.12.0");
        }
        ClassWriter writer = new ClassWriter(reader, ClassWriter.COMPUTE_MAXS);
        reader.accept(
                new ClassVisitor(Opcodes.ASM8, writer) {
                    @Override
                    public MethodVisitor visitMethod(
                            int access, String name, String desc, String sig, String[] exc) {
                        MethodVisitor mv = super.visitMethod(access, name, desc, sig, exc);
                        Integer total = FILL_METHODS.get(name + desc);
                        if (total == null) {
                            return mv;
                        }
                        return new MethodVisitor(Opcodes.ASM8, mv) {
                            int seen = 0;

                            @Override
                            public void visitMethodInsn(
                                    int op, String owner, String n, String d, boolean itf) {
                                // same stack (queue, timeout, unit -> Object): a drop-in call
                                if (isTimedPoll(op, owner, n, d) && ++seen == total) {
                                    super.visitMethodInsn(
                                            Opcodes.INVOKESTATIC, FILL, "fill", FILL_DESCRIPTOR, false);
                                } else {
                                    super.visitMethodInsn(op, owner, n, d, itf);
                                }
                            }
                        };
                    }
                },
                0);
        return writer.toByteArray();
    }

    static byte[] rewrite(byte[] bytes) {
        ClassReader reader = new ClassReader(bytes);
        // COMPUTE_MAXS only: the one frame the hook needs is written by hand (F_SAME at a
        // label before the original first instruction), so no class hierarchy is loaded
        ClassWriter writer = new ClassWriter(reader, ClassWriter.COMPUTE_MAXS);
        int[] found = {0};
        reader.accept(
                new ClassVisitor(Opcodes.ASM8, writer) {
                    @Override
                    public MethodVisitor visitMethod(
                            int access, String name, String desc, String sig, String[] exc) {
                        MethodVisitor mv = super.visitMethod(access, name, desc, sig, exc);
                        if (!METHOD.equals(name) || !DESCRIPTOR.equals(desc)) {
                            return mv;
                        }
                        found[0]++;
                        return new MethodVisitor(Opcodes.ASM8, mv) {
                            @Override
                            public void visitCode() {
                                super.visitCode();
                                Label original = new Label();
                                super.visitVarInsn(Opcodes.ALOAD, 1);
                                super.visitVarInsn(Opcodes.ALOAD, 2);
                                super.visitVarInsn(Opcodes.ALOAD, 4);
                                super.visitMethodInsn(
                                        Opcodes.INVOKESTATIC, HOOK, "answer", HOOK_DESCRIPTOR, false);
                                super.visitJumpInsn(Opcodes.IFEQ, original);
                                super.visitInsn(Opcodes.RETURN);
                                super.visitLabel(original);
                                super.visitFrame(Opcodes.F_SAME, 0, null, 0, null);
                            }
                        };
                    }
                },
                0);
        if (found[0] != 1) {
            refuse(
                    TARGET + " has " + found[0] + " methods " + METHOD + DESCRIPTOR
                            + " (expected exactly 1): this agent is written for TorchServe 0.12.0");
        }
        return writer.toByteArray();
    }

    static void refuse(String why) {
        Agent.refuse(why);
    }
}
