/* tether._speedups: what the module's source files share. */
#ifndef TETHER_SPEEDUPS_H
#define TETHER_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* WebSocket (_speedups_ws.c). */
PyObject *tether_apply_mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *tether_ws_scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *tether_join_mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
