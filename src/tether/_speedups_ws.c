/* tether._speedups, WebSocket part: masking and frame scanning (RFC 6455 §5).
 *
 * apply_mask(data, mask, offset=0) -> bytes
 *     XOR data with a four-byte WebSocket masking key (RFC 6455 §5.3), starting
 *     at position `offset` of the frame payload. Same contract as the pure-Python
 *     tether.ws.frames._apply_mask_py, which stays the reference and the fallback.
 *
 * ws_scan(data, pos, masked, fast_max, events, text_cls, binary_cls) -> int
 *     From offset pos of data (bytes), consume consecutive whole, unfragmented,
 *     uncompressed text and binary frames whose payload is at most fast_max
 *     bytes and whose mask bit is `masked`; append TextMessage(str) or
 *     BinaryMessage(bytes) to events for each; return the offset of the first
 *     frame not consumed. It never raises for the peer's data: a frame it does
 *     not take (another opcode, a longer payload, a wrong mask bit, invalid
 *     UTF-8, an incomplete frame) is left for the Python parser, which is the
 *     reference (tether.ws.protocol.Connection._parse) and reports errors.
 *
 * join_mask(parts, mask) -> bytes
 *     Concatenate a sequence of buffers and XOR the result with a four-byte
 *     mask from payload position 0, in one pass: a large masked payload that
 *     arrived in pieces is copied once instead of twice.
 */
#include "_speedups.h"

#include <stdint.h>
#include <string.h>

/* The message classes are frozen dataclasses with __slots__: a new instance
 * gets its one field through the slot's member descriptor, as the dataclass's
 * own __init__ does with object.__setattr__, without running Python code. */
typedef struct {
    PyObject *cls;   /* the class last given (a strong reference), checked by identity */
    PyObject *descr; /* its "data" member descriptor (a strong reference) */
} message_class;

static message_class text_class, binary_class;

static int
cache_class(message_class *slot, PyObject *cls)
{
    if (slot->cls == cls)
        return 0;
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "message class must be a type");
        return -1;
    }
    PyObject *descr = PyObject_GetAttrString(cls, "data");
    if (descr == NULL)
        return -1;
    if (Py_TYPE(descr)->tp_descr_set == NULL) {
        Py_DECREF(descr);
        PyErr_SetString(PyExc_TypeError, "message class has no settable data slot");
        return -1;
    }
    Py_XSETREF(slot->descr, descr);
    Py_INCREF(cls);
    Py_XSETREF(slot->cls, cls);
    return 0;
}

static PyObject *
new_message(message_class *slot, PyObject *data)
{
    PyTypeObject *type = (PyTypeObject *)slot->cls;
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL)
        return NULL;
    if (Py_TYPE(slot->descr)->tp_descr_set(slot->descr, obj, data) < 0) {
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
}

/* out[i] = in[i] ^ mask[(offset + i) % 4] for i < n, a word at a time. */
static void
mask_copy(unsigned char *out, const unsigned char *in, Py_ssize_t n, const unsigned char *mask,
                 Py_ssize_t offset)
{
    unsigned char rotated[8];
    for (int k = 0; k < 8; k++)
        rotated[k] = mask[(k + offset) & 3];
    uint64_t key;
    memcpy(&key, rotated, 8);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, in + i, 8);
        word ^= key;
        memcpy(out + i, &word, 8);
    }
    for (; i < n; i++)
        out[i] = in[i] ^ rotated[i & 7];
}

/* Only large payloads are worth giving the GIL away for. */
#define RELEASE_GIL_FROM 65536
#define TETHER_NOGIL_IF(cond) { PyThreadState *saved_ = (cond) ? PyEval_SaveThread() : NULL;
#define TETHER_NOGIL_END if (saved_ != NULL) PyEval_RestoreThread(saved_); }

PyObject *
tether_apply_mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
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
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    TETHER_NOGIL_IF(data.len >= RELEASE_GIL_FROM)
    mask_copy(out, (const unsigned char *)data.buf, data.len, (const unsigned char *)mask.buf, offset);
    TETHER_NOGIL_END

done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

PyObject *
tether_ws_scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "ws_scan(data, pos, masked, fast_max, events, text_cls, binary_cls)");
        return NULL;
    }
    PyObject *data = args[0];
    PyObject *events = args[4];
    if (!PyBytes_Check(data) || !PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "ws_scan() needs bytes data and a list of events");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    int masked = PyObject_IsTrue(args[2]);
    if (masked < 0)
        return NULL;
    Py_ssize_t fast_max = PyLong_AsSsize_t(args[3]);
    if (fast_max == -1 && PyErr_Occurred())
        return NULL;
    if (fast_max > 125)
        fast_max = 125; /* a longer payload has an extended length field */
    if (cache_class(&text_class, args[5]) < 0 || cache_class(&binary_class, args[6]) < 0)
        return NULL;

    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data);
    if (pos < 0 || pos > end) {
        PyErr_SetString(PyExc_ValueError, "pos is outside data");
        return NULL;
    }
    const unsigned int mask_bit = masked ? 0x80 : 0;
    const Py_ssize_t header = masked ? 6 : 2;
    unsigned char plain[125];

    while (end - pos >= 2) {
        unsigned int b0 = buf[pos], b1 = buf[pos + 1];
        Py_ssize_t length = b1 & 0x7F;
        if ((b0 != 0x81 && b0 != 0x82) || (b1 & 0x80) != mask_bit || length > fast_max ||
            end - pos < header + length)
            break;
        const unsigned char *payload = buf + pos + header;
        if (masked) {
            mask_copy(plain, payload, length, buf + pos + 2, 0);
            payload = plain;
        }
        PyObject *value, *message;
        if (b0 == 0x81) {
            value = PyUnicode_DecodeUTF8((const char *)payload, length, NULL);
            if (value == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                    return NULL;
                PyErr_Clear(); /* the Python parser reports it, with its close code */
                break;
            }
            message = new_message(&text_class, value);
        } else {
            value = PyBytes_FromStringAndSize((const char *)payload, length);
            if (value == NULL)
                return NULL;
            message = new_message(&binary_class, value);
        }
        Py_DECREF(value);
        if (message == NULL)
            return NULL;
        int failed = PyList_Append(events, message);
        Py_DECREF(message);
        if (failed)
            return NULL;
        pos += header + length;
    }
    return PyLong_FromSsize_t(pos);
}

PyObject *
tether_join_mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "join_mask(parts, mask)");
        return NULL;
    }
    Py_buffer mask;
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL, *seq = NULL;
    Py_buffer *views = NULL;
    Py_ssize_t held = 0;
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        goto done;
    }
    seq = PySequence_Fast(args[0], "parts must be a sequence of buffers");
    if (seq == NULL)
        goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    views = PyMem_New(Py_buffer, count ? count : 1);
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = 0;
    for (; held < count; held++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, held), &views[held], PyBUF_SIMPLE) < 0)
            goto done;
        total += views[held].len;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    TETHER_NOGIL_IF(total >= RELEASE_GIL_FROM)
    Py_ssize_t at = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        mask_copy(out + at, (const unsigned char *)views[k].buf, views[k].len,
                  (const unsigned char *)mask.buf, at);
        at += views[k].len;
    }
    TETHER_NOGIL_END

done:
    for (Py_ssize_t k = 0; k < held; k++)
        PyBuffer_Release(&views[k]);
    PyMem_Free(views);
    Py_XDECREF(seq);
    PyBuffer_Release(&mask);
    return result;
}
