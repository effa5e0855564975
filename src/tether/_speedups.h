/* tether._speedups: what the module's source files share. */
#ifndef TETHER_SPEEDUPS_H
#define TETHER_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* out[i] = in[i] ^ mask[(offset + i) % 4] for i < n; out may equal in. */
void tether_mask_copy(unsigned char *out, const unsigned char *in, Py_ssize_t n,
                      const unsigned char *mask, Py_ssize_t offset);

/* WebSocket (_speedups_ws.c). */
PyObject *tether_ws_scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *tether_join_mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
