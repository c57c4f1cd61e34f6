package latentserve.agent;

import java.lang.instrument.ClassFileTransformer;
import java.security.ProtectionDomain;
import jdk.internal.org.objectweb.asm.ClassReader;
import jdk.internal.org.objectweb.asm.ClassVisitor;
import jdk.internal.org.objectweb.asm.ClassWriter;
import jdk.internal.org.objectweb.asm.Label;
import jdk.internal.org.objectweb.asm.MethodVisitor;
import jdk.internal.org.objectweb.asm.Opcodes;

/**
 * Prepends to {@code InferenceRequestHandler.handleRequest(ctx, req, decoder, segments)}:
 *
 * <pre>if (Metadata.answer(ctx, req, segments)) return;</pre>
 *
 * so that a metadata or readiness request of the Open Inference Protocol is answered before
 * the frontend's own routing, which sends it to a 404. Every other request runs the
 * original method unchanged.
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

    @Override
    public byte[] transform(
            ClassLoader loader,
            String className,
            Class<?> redefined,
            ProtectionDomain domain,
            byte[] bytes) {
        if (!TARGET.equals(className)) {
            return null;
        }
        try {
            return rewrite(bytes);
        } catch (Throwable err) {
            refuse("could not rewrite " + TARGET + ": " + err);
            return null;
        }
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
        System.err.println("latentserve-agent: refusing to start: " + why);
        System.err.flush();
        Runtime.getRuntime().halt(3);
    }
}
