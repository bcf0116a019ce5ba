/* Run an LSTM exported by rnncompiler from plain C: load the weights saved from Python,
   run forward and backward through the exported kernel, print the results.

       usage: lstm_demo T B DIR

   DIR holds lstm.h/lstm.c's inputs as save_weights.py wrote them: params.bin,
   x.bin, dy.bin (doubles) and lengths.bin (ints). Every printed line is
   `name: values`, with 17 significant digits. */
#include <stdio.h>
#include <stdlib.h>

#include "lstm.h"

/* the parameters by name, from the header's layout constants */
static const struct { const char *name; size_t offset, count; } PARAMS[] = {
    {"W_f", lstm_PARAM_W_f_OFFSET, lstm_PARAM_W_f_COUNT},
    {"b_f", lstm_PARAM_b_f_OFFSET, lstm_PARAM_b_f_COUNT},
    {"W_i", lstm_PARAM_W_i_OFFSET, lstm_PARAM_W_i_COUNT},
    {"b_i", lstm_PARAM_b_i_OFFSET, lstm_PARAM_b_i_COUNT},
    {"W_g", lstm_PARAM_W_g_OFFSET, lstm_PARAM_W_g_COUNT},
    {"b_g", lstm_PARAM_b_g_OFFSET, lstm_PARAM_b_g_COUNT},
    {"W_o", lstm_PARAM_W_o_OFFSET, lstm_PARAM_W_o_COUNT},
    {"b_o", lstm_PARAM_b_o_OFFSET, lstm_PARAM_b_o_COUNT},
};

/* n items of `size` bytes from DIR/name, which must hold exactly that many */
static void *load(const char *dir, const char *name, size_t n, size_t size)
{
    char path[4096];
    void *buf = malloc(n * size + 1);
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (!f || !buf || fread(buf, size, n, f) != n || fgetc(f) != EOF) {
        fprintf(stderr, "lstm_demo: %s: expected %lu values of %lu bytes\n", path,
                (unsigned long)n, (unsigned long)size);
        exit(2);
    }
    fclose(f);
    return buf;
}

static void print_values(const char *name, const char *suffix, const double *v, size_t n)
{
    size_t i;
    printf("%s%s:", name, suffix);
    for (i = 0; i < n; ++i) printf(" %.17g", v[i]);
    printf("\n");
}

/* one state of every batch row out of the B x S state rows */
static void print_state(const char *name, const double *rows, int B, size_t off, size_t size)
{
    int b;
    printf("%s:", name);
    for (b = 0; b < B; ++b) {
        size_t j;
        for (j = 0; j < size; ++j) printf(" %.17g", rows[(size_t)b * lstm_STATE_SIZE + off + j]);
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    int T, B, rc, b;
    size_t i, n_y, n_x, n_work;
    double *params, *x, *dy, *y, *state_T, *work, *dparams, *dx, *dstate0, loss = 0;
    int *lengths;
    if (argc != 4 || (T = atoi(argv[1])) < 1 || (B = atoi(argv[2])) < 1) {
        fprintf(stderr, "usage: lstm_demo T B DIR\n");
        return 2;
    }
    n_x = (size_t)T * B * lstm_input_size();
    n_y = (size_t)T * B * lstm_output_size();
    n_work = lstm_workspace_size(T, B);
    if (n_work == (size_t)-1) {
        fprintf(stderr, "lstm_demo: T=%d, B=%d is too large\n", T, B);
        return 2;
    }
    params = load(argv[3], "params.bin", lstm_param_count(), sizeof(double));
    x = load(argv[3], "x.bin", n_x, sizeof(double));
    dy = load(argv[3], "dy.bin", n_y, sizeof(double));
    lengths = load(argv[3], "lengths.bin", (size_t)B, sizeof(int));
    y = malloc(n_y * sizeof(double));
    state_T = malloc((size_t)B * lstm_STATE_SIZE * sizeof(double));
    work = malloc(n_work * sizeof(double));
    dparams = malloc(lstm_PARAM_COUNT * sizeof(double));
    dx = malloc(n_x * sizeof(double));
    dstate0 = malloc((size_t)B * lstm_STATE_SIZE * sizeof(double));
    if (!y || !state_T || !work || !dparams || !dx || !dstate0) {
        fprintf(stderr, "lstm_demo: out of memory\n");
        return 2;
    }

    /* forward from zero states (state0 = NULL), keeping the tape in work */
    rc = lstm_forward(T, B, params, x, lengths, NULL, y, state_T, work);
    if (rc) {
        fprintf(stderr, "lstm_demo: lstm_forward returned %d\n", rc);
        return 1;
    }
    for (i = 0; i < n_y; ++i) loss += dy[i] * y[i];   /* L = sum(dy * y): dL/dy = dy */

    /* backward: no loss on the final states (dstate_T = NULL) */
    rc = lstm_backward(T, B, params, x, lengths, NULL, work, dy, NULL, dparams, dx, dstate0);
    if (rc) {
        fprintf(stderr, "lstm_demo: lstm_backward returned %d\n", rc);
        return 1;
    }

    printf("lengths:");
    for (b = 0; b < B; ++b) printf(" %d", lengths[b]);
    printf("\n");
    print_values("y", "", y, n_y);
    print_state("state_T.h", state_T, B, lstm_STATE_h_OFFSET, lstm_STATE_h_SIZE);
    print_state("state_T.c", state_T, B, lstm_STATE_c_OFFSET, lstm_STATE_c_SIZE);
    print_values("loss", "", &loss, 1);
    for (i = 0; i < sizeof PARAMS / sizeof PARAMS[0]; ++i) {
        printf("d");
        print_values(PARAMS[i].name, "", dparams + PARAMS[i].offset, PARAMS[i].count);
    }
    print_values("dx", "", dx, n_x);
    print_state("dstate0.h", dstate0, B, lstm_STATE_h_OFFSET, lstm_STATE_h_SIZE);
    print_state("dstate0.c", dstate0, B, lstm_STATE_c_OFFSET, lstm_STATE_c_SIZE);

    free(params); free(x); free(dy); free(lengths); free(y); free(state_T);
    free(work); free(dparams); free(dx); free(dstate0);
    return 0;
}
