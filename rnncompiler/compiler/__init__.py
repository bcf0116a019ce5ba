"""The compiler: a cell function becomes a loaded C kernel through these stages, in the
order data flows (each module imports only the ones before it):

    activations    the activation table: one row per built-in elementwise function
    expr, mathfn   the elementwise vocabulary: expression trees, and the table's rows as
                   sympy functions, C helpers and numpy forms
    notation       how expressions read in the equations and C comments
    dsl            @rc.cell traces a Python function into a frozen CellSpec
    ops            the op registry: everything about one kind of IR node
    ir             the typed step IR (StepIR), checked after every pass
    graph          the step IR with sizes bound (build_graph), elementwise chains fused
    unroll         the step repeated over time (rc.unroll)
    autodiff       reverse mode over the step IR: the backward step (BPTT)
    equations      the forward and derived backward equations, as text and LaTeX
    recurrence     how each new state depends on the old ones (kern.recurrence())
    evaluator      the numpy reference (rc.reference), the executable semantics
    codegen        both steps lowered to one C file with the time loop inside
    csrc           the fixed C every kernel uses, as real .c/.h files
    build          C text -> a compiled, cached, loaded cffi module
    pipeline       rc.compile: the stages in order, with the cache in front
    selfcheck      a new kernel compared with the reference before it is cached
    export         rc.export_c: the same C as a standalone NAME.h + NAME.c

The loaded module is wrapped by rnncompiler.runtime.Kernel, which needs none of this.
docs/architecture.md describes each stage and the layers contract that keeps this order.
"""
