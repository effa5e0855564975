/* tether._speedups: the few loops Python cannot run fast.
 *
 * apply_mask(data, mask, offset=0) -> bytes
 *     XOR data with a four-byte WebSocket masking key (RFC 6455 §5.3), starting
 *     at position `offset` of the frame payload. Same contract as the pure-Python
 *     tether.ws.frames._apply_mask_py, which stays the reference and the fallback.
 */
#include "_speedups.h" /* Python.h, and the functions of _speedups_ws.c */
#include <stdint.h>
#include <string.h>

static PyObject *
apply_mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "apply_mask(data, mask, offset=0)");
        return NULL;
    }
    Py_ssize_t offset = 0;
    if (nargs == 3) {
        offset = PyLong_AsSsize_t(args[2]);
        if (offset == -1 && PyErr_Occurred())
            return NULL;
    }
    Py_buffer data, mask;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *result = NULL;
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL)
        goto done;

    const unsigned char *in = (const unsigned char *)data.buf;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    const unsigned char *m = (const unsigned char *)mask.buf;
    unsigned char rotated[8];
    for (int k = 0; k < 8; k++)
        rotated[k] = m[(k + offset) & 3];
    uint64_t key;
    memcpy(&key, rotated, 8);
    Py_ssize_t n = data.len, i = 0;

    /* Only large payloads are worth giving the GIL away for. */
    PyThreadState *saved = n >= 65536 ? PyEval_SaveThread() : NULL;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, in + i, 8);
        word ^= key;
        memcpy(out + i, &word, 8);
    }
    for (; i < n; i++)
        out[i] = in[i] ^ rotated[i & 7];
    if (saved != NULL)
        PyEval_RestoreThread(saved);

done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

static PyMethodDef methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask, offset=0) -> bytes: XOR data with a 4-byte mask."},
    {"ws_scan", (PyCFunction)(void (*)(void))tether_ws_scan, METH_FASTCALL,
     "ws_scan(data, pos, masked, fast_max, events, text_cls, binary_cls) -> int:\n"
     "consume whole small WebSocket data frames into events (see _speedups_ws.c)."},
    {"join_mask", (PyCFunction)(void (*)(void))tether_join_mask, METH_FASTCALL,
     "join_mask(parts, mask) -> bytes: concatenate and unmask in one pass."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tether._speedups", "Compiled helpers for tether's protocol cores.", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
