/* tether._speedups: the few loops Python cannot run fast. The module, and its MQTT part;
 * the WebSocket functions (apply_mask, ws_scan, join_mask) are in _speedups_ws.c.
 *
 * split_packets(buf, at, max_size, version, names=None, message=None)
 *         -> (items, offset, malformed)
 *     Split the whole MQTT control packets of buf from offset `at` by their fixed
 *     headers (MQTT 5.0 §2.1, §1.5.5), and turn QoS 0 PUBLISH packets of known topics
 *     into messages. Same contract as the pure-Python
 *     tether.mqtt.packets._split_packets_py, the reference and the fallback; a message is
 *     built as a copy of message("", b"", 0, False) with topic, payload and retain
 *     replaced (message must be a class with __slots__ whose constructor only stores its
 *     arguments, such as a slotted dataclass; any other callable is called instead).
 */
#include "_speedups.h"
#include <stdint.h>
#include <string.h>
#include <structmember.h>

/* --- MQTT ------------------------------------------------------------------------------ */

/* MQTT 5.0 §2.1.3: the fixed header flags of each packet type; -2 marks a reserved type,
 * -1 PUBLISH, whose flags carry DUP, QoS and RETAIN. */
static const int fixed_flags[16] = {-2, 0, 0, -1, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0};

/* The message class last seen, and how to copy its template (see split_packets). */
static PyObject *message_class = NULL;
static PyObject *message_template = NULL; /* NULL: call the class instead */
static Py_ssize_t topic_offset, payload_offset, retain_offset;

static int
member_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset)
{
    for (PyMemberDef *m = type->tp_members; m != NULL && m->name != NULL; m++) {
        if (strcmp(m->name, name) == 0 && m->type == T_OBJECT_EX && !(m->flags & READONLY)) {
            *offset = m->offset;
            return 1;
        }
    }
    return 0;
}

/* Remember how to build messages of class cls; 0 on success, -1 with an exception set. */
static int
use_message_class(PyObject *cls)
{
    if (cls == message_class)
        return 0;
    PyObject *template = NULL;
    if (PyType_Check(cls)) {
        PyTypeObject *type = (PyTypeObject *)cls;
        if (type->tp_base == &PyBaseObject_Type && type->tp_dictoffset == 0 && type->tp_weaklistoffset == 0
            && type->tp_alloc != NULL && member_offset(type, "topic", &topic_offset)
            && member_offset(type, "payload", &payload_offset) && member_offset(type, "retain", &retain_offset)) {
            template = PyObject_CallFunction(cls, "sy#iO", "", "", (Py_ssize_t)0, 0, Py_False);
            if (template == NULL)
                return -1;
            if (Py_TYPE(template) != type)
                Py_CLEAR(template);
        }
    }
    Py_INCREF(cls);
    Py_XSETREF(message_class, cls);
    Py_XSETREF(message_template, template);
    return 0;
}

static PyObject *
new_message(PyObject *topic, const char *payload, Py_ssize_t size, int retain)
{
    PyObject *data = PyBytes_FromStringAndSize(payload, size);
    if (data == NULL)
        return NULL;
    if (message_template == NULL) {
        PyObject *args[4] = {topic, data, NULL, retain ? Py_True : Py_False};
        args[2] = PyLong_FromLong(0);
        PyObject *result = args[2] == NULL ? NULL : PyObject_Vectorcall(message_class, args, 4, NULL);
        Py_XDECREF(args[2]);
        Py_DECREF(data);
        return result;
    }
    PyTypeObject *type = Py_TYPE(message_template);
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    for (PyMemberDef *m = type->tp_members; m->name != NULL; m++) {
        if (m->type == T_OBJECT_EX || m->type == T_OBJECT) {
            PyObject *value = *(PyObject **)((char *)message_template + m->offset);
            Py_XINCREF(value);
            *(PyObject **)((char *)obj + m->offset) = value;
        }
    }
    Py_INCREF(topic);
    Py_XSETREF(*(PyObject **)((char *)obj + topic_offset), topic);
    Py_XSETREF(*(PyObject **)((char *)obj + payload_offset), data);
    PyObject *flag = retain ? Py_True : Py_False;
    Py_INCREF(flag);
    Py_XSETREF(*(PyObject **)((char *)obj + retain_offset), flag);
    return obj;
}

static PyObject *
split_packets(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 4 || nargs > 6) {
        PyErr_SetString(PyExc_TypeError, "split_packets(buf, at, max_size, version, names=None, message=None)");
        return NULL;
    }
    Py_ssize_t at = PyLong_AsSsize_t(args[1]);
    if (at == -1 && PyErr_Occurred())
        return NULL;
    if (at < 0) {
        PyErr_Format(PyExc_ValueError, "offset %zd is negative", at);
        return NULL;
    }
    Py_ssize_t max_size = PyLong_AsSsize_t(args[2]);
    if (max_size == -1 && PyErr_Occurred())
        return NULL;
    long version = PyLong_AsLong(args[3]);
    if (version == -1 && PyErr_Occurred())
        return NULL;
    PyObject *names = nargs > 4 && args[4] != Py_None ? args[4] : NULL;
    PyObject *message = nargs > 5 && args[5] != Py_None ? args[5] : NULL;
    if (names != NULL && !PyDict_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "names must be a dict");
        return NULL;
    }
    if (names == NULL || message == NULL)
        names = NULL;
    else if (use_message_class(message) < 0)
        return NULL;

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = (const unsigned char *)view.buf;
    const Py_ssize_t n = view.len;
    const int v5 = version == 5;
    int malformed = 0;
    PyObject *items = PyList_New(0);
    /* The last topic looked up: streams repeat their topics. */
    PyObject *last_key = NULL, *last_topic = NULL;
    if (items == NULL)
        goto error;

    while (at < n) {
        unsigned char first = p[at];
        int kind = first >> 4, flags = fixed_flags[kind];
        if (flags == -2 || (kind == 15 && !v5) || (flags >= 0 && (first & 0x0F) != flags)) {
            malformed = 1;
            break;
        }
        Py_ssize_t length = 0, start = -1;
        int i;
        for (i = 0; i < 4 && at + 1 + i < n; i++) {
            unsigned char byte = p[at + 1 + i];
            length |= (Py_ssize_t)(byte & 0x7F) << (7 * i);
            if (byte < 0x80) {
                if (byte == 0 && i)
                    malformed = 1; /* not in its shortest form */
                else
                    start = at + 2 + i;
                break;
            }
        }
        if (malformed)
            break;
        if (start < 0) {
            malformed = i == 4; /* longer than four bytes; else the buffer ends inside it */
            break;
        }
        Py_ssize_t end = start + length;
        if (end - at > max_size) {
            malformed = 1;
            break;
        }
        if (end > n)
            break;
        if (names != NULL && (first & 0xFE) == 0x30 && end - start > 2) {
            Py_ssize_t topic_size = p[start] << 8 | p[start + 1];
            Py_ssize_t topic_end = start + 2 + topic_size;
            if (topic_end <= end && (!v5 || (topic_end < end && p[topic_end] == 0))) {
                const char *name = (const char *)p + start + 2;
                if (last_key == NULL || PyBytes_GET_SIZE(last_key) != topic_size
                    || memcmp(PyBytes_AS_STRING(last_key), name, topic_size) != 0) {
                    Py_CLEAR(last_key);
                    Py_CLEAR(last_topic);
                    last_key = PyBytes_FromStringAndSize(name, topic_size);
                    if (last_key == NULL)
                        goto error;
                    last_topic = PyDict_GetItemWithError(names, last_key);
                    if (last_topic == NULL && PyErr_Occurred())
                        goto error;
                    Py_XINCREF(last_topic);
                }
                if (last_topic != NULL && last_topic != Py_None) {
                    PyObject *item = new_message(last_topic, (const char *)p + topic_end + v5,
                                                 end - topic_end - v5, first & 1);
                    if (item == NULL || PyList_Append(items, item) < 0) {
                        Py_XDECREF(item);
                        goto error;
                    }
                    Py_DECREF(item);
                    at = end;
                    continue;
                }
            }
        }
        PyObject *header = Py_BuildValue("(inn)", (int)first, start, end);
        if (header == NULL || PyList_Append(items, header) < 0) {
            Py_XDECREF(header);
            goto error;
        }
        Py_DECREF(header);
        at = end;
    }
    Py_XDECREF(last_key);
    Py_XDECREF(last_topic);
    PyBuffer_Release(&view);
    return Py_BuildValue("(NnO)", items, at, malformed ? Py_True : Py_False);

error:
    Py_XDECREF(last_key);
    Py_XDECREF(last_topic);
    Py_XDECREF(items);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))tether_apply_mask, METH_FASTCALL,
     "apply_mask(data, mask, offset=0) -> bytes: XOR data with a 4-byte mask."},
    {"ws_scan", (PyCFunction)(void (*)(void))tether_ws_scan, METH_FASTCALL,
     "ws_scan(data, pos, masked, fast_max, events, text_cls, binary_cls) -> int:\n"
     "consume whole small WebSocket data frames into events (see _speedups_ws.c)."},
    {"join_mask", (PyCFunction)(void (*)(void))tether_join_mask, METH_FASTCALL,
     "join_mask(parts, mask) -> bytes: concatenate and unmask in one pass."},
    {"split_packets", (PyCFunction)(void (*)(void))split_packets, METH_FASTCALL,
     "split_packets(buf, at, max_size, version, names=None, message=None) -> (items, offset, malformed):\n"
     "split the whole MQTT packets of buf (see tether.mqtt.packets._split_packets_py)."},
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
