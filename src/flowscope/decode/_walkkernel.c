/*
 * The batch walk's two loops over a batch, compiled: `walk` reads every message header and set
 * header of a batch of NetFlow v5 / v9 / IPFIX datagrams and joins the payloads into one buffer;
 * `gather` copies the records of data sets end to end and repeats their header values per record.
 *
 * Why C: headerwalk.py and batchwalk.py do both with numpy calls over the whole batch, but a batch of 256
 * datagrams is small, and the fixed cost of those calls (plus the Python reads of every datagram
 * and the join) was more than half the decode time of a NetFlow v9 or IPFIX batch. These loops
 * make exactly the arrays the numpy steps make (tests compare them), and walkkernel.py falls back
 * to the numpy steps when this module is not built.
 *
 * No numpy C API: the tables are writable buffers made by the caller. Every read is bounds
 * checked against the datagram's own length; what does not fit marks the datagram as not
 * eligible (or "bad"), as the numpy walk does, and the per-message path then counts what is wrong.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PAD 64       /* zero bytes after the joined payloads, as headerwalk._PAD */
#define MAX_SETS 16  /* sets per message walked here, as walkkernel.MAX_SETS */
#define V5_HEADER 24
#define V5_RECORD 48
#define V9_HEADER 20
#define IPFIX_HEADER 16
/* per datagram: exporter code, version code, eligible, domain, sequence, export ms, uptime ms,
 * received ms, sampling, v5 count (header bytes 2-3), version (-1 if shorter than 2 bytes) */
#define HEAD_COLUMNS 11
#define SET_COLUMNS 5 /* datagram, set id, body start in the buffer, body length, template set */

static PyObject *payload_name, *exporter_name, *received_name;

static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline uint16_t be16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* A buffer of at least `items` 8-byte items. */
static int need(Py_buffer *view, Py_ssize_t items, const char *what) {
    if (view->len < items * 8) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, %zd needed", what, view->len, items * 8);
        return -1;
    }
    return 0;
}

/* Sets of one v9 / IPFIX message, from `body` to `end` (offsets in the joined buffer): appended
 * to `sets`; returns 1 if the message is bad (as the numpy walk marks it), else 0. */
static int walk_sets(const unsigned char *buffer, Py_ssize_t datagram, Py_ssize_t body, Py_ssize_t end, int v9,
                     int64_t *sets, Py_ssize_t *count) {
    Py_ssize_t position = body;
    for (int k = 0;; k++) {
        Py_ssize_t left = end - position;
        if (left < 4) return left > 0; /* padding after the last set: counted by the per-message path */
        if (k == MAX_SETS) return 1;
        int64_t set_id = be16(buffer + position), set_length = be16(buffer + position + 2);
        int template_set = (set_id >> 1) == 1 - v9; /* v9: set id 0 or 1, IPFIX: 2 or 3 */
        if (set_length < 4 || set_length > left || (set_id < 256 && !template_set)) return 1;
        int64_t *row = sets + *count * SET_COLUMNS;
        row[0] = datagram;
        row[1] = set_id;
        row[2] = position + 4;
        row[3] = set_length - 4;
        row[4] = template_set;
        *count += 1;
        position += set_length;
    }
}

PyDoc_STRVAR(walk_doc,
"walk(datagrams, codes, exporters, max_exporters, heads, sets) -> (buffer, set_count) or None\n\n"
"The payloads joined (and 64 zero bytes) into `buffer`; per datagram a row of `heads` (int64, 11\n"
"columns: exporter code, version code 0/1/2 for v5/v9/IPFIX, eligible, domain, sequence, export\n"
"ms, uptime ms, received ms, v5 sampling interval, header bytes 2-3, version); per set of an\n"
"eligible datagram, in wire order, a row of `sets` (int64, 5 columns: datagram, set id, body\n"
"offset in `buffer`, body length, template set; room for 16 per datagram). Exporters get codes\n"
"in order of first appearance (`codes`, `exporters`). None if there are `max_exporters` or more,\n"
"or a payload is not `bytes`.");

static PyObject *walk(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *datagrams, *codes, *exporters, *result = NULL, *joined = NULL;
    Py_ssize_t max_exporters;
    Py_buffer heads, sets;
    if (!PyArg_ParseTuple(args, "O!O!O!nw*w*", &PyList_Type, &datagrams, &PyDict_Type, &codes, &PyList_Type,
                          &exporters, &max_exporters, &heads, &sets))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(datagrams), total = 0, set_count = 0;
    if (need(&heads, n * HEAD_COLUMNS, "heads") < 0 || need(&sets, n * MAX_SETS * SET_COLUMNS, "sets") < 0)
        goto done;
    /* first pass: lengths, exporter codes, arrival times */
    int64_t *head = (int64_t *)heads.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *datagram = PyList_GET_ITEM(datagrams, i);
        PyObject *payload = PyObject_GetAttr(datagram, payload_name);
        if (payload == NULL) goto done;
        if (!PyBytes_Check(payload)) { /* another buffer type: left to the numpy walk */
            Py_DECREF(payload);
            result = Py_NewRef(Py_None);
            goto done;
        }
        total += PyBytes_GET_SIZE(payload);
        Py_DECREF(payload);
        PyObject *exporter = PyObject_GetAttr(datagram, exporter_name);
        if (exporter == NULL) goto done;
        PyObject *code = PyDict_GetItemWithError(codes, exporter); /* borrowed */
        if (code == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(exporter);
                goto done;
            }
            code = PyLong_FromSsize_t(PyList_GET_SIZE(exporters));
            int failed = code == NULL || PyDict_SetItem(codes, exporter, code) < 0 ||
                         PyList_Append(exporters, exporter) < 0;
            Py_XDECREF(code); /* the dict holds it */
            if (failed) {
                Py_DECREF(exporter);
                goto done;
            }
        }
        Py_DECREF(exporter);
        int64_t *row = head + i * HEAD_COLUMNS;
        memset(row, 0, HEAD_COLUMNS * sizeof(int64_t));
        row[0] = PyLong_AsLongLong(code);
        PyObject *received = PyObject_GetAttr(datagram, received_name);
        if (received == NULL) goto done;
        row[7] = PyLong_AsLongLong(received);
        Py_DECREF(received);
        if (PyErr_Occurred()) goto done;
    }
    if (PyList_GET_SIZE(exporters) >= max_exporters) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    joined = PyBytes_FromStringAndSize(NULL, total + PAD);
    if (joined == NULL) goto done;
    unsigned char *buffer = (unsigned char *)PyBytes_AS_STRING(joined);
    memset(buffer + total, 0, PAD);
    int64_t *set_rows = (int64_t *)sets.buf;
    /* second pass: copy, read the headers, walk the sets */
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *payload = PyObject_GetAttr(PyList_GET_ITEM(datagrams, i), payload_name);
        if (payload == NULL) goto done;
        Py_ssize_t length = PyBytes_Check(payload) ? PyBytes_GET_SIZE(payload) : -1;
        if (length < 0 || start + length > total) {
            Py_DECREF(payload);
            PyErr_Format(PyExc_ValueError, "datagram %zd changed while it was read", i);
            goto done;
        }
        memcpy(buffer + start, PyBytes_AS_STRING(payload), (size_t)length);
        Py_DECREF(payload);
        const unsigned char *p = buffer + start;
        int64_t *row = head + i * HEAD_COLUMNS;
        row[10] = length >= 2 ? be16(p) : -1;
        if (length >= 4) row[9] = be16(p + 2);
        if (row[10] == 5 && row[9] > 0 && length == V5_HEADER + row[9] * V5_RECORD) {
            row[1] = 0;
            row[2] = 1;
            row[3] = be16(p + 20); /* engine type << 8 | engine id */
            row[4] = be32(p + 16);
            row[5] = (int64_t)be32(p + 8) * 1000 + be32(p + 12) / 1000000;
            row[6] = be32(p + 4);
            row[8] = be16(p + 22) & 0x3FFF;
            int64_t *set = set_rows + set_count * SET_COLUMNS;
            set[0] = i;
            set[1] = 0;
            set[2] = start + V5_HEADER;
            set[3] = row[9] * V5_RECORD;
            set[4] = 0;
            set_count++;
        } else if ((row[10] == 9 && length >= V9_HEADER) ||
                   (row[10] == 10 && length >= IPFIX_HEADER && row[9] == length)) {
            int v9 = row[10] == 9;
            row[1] = v9 ? 1 : 2;
            row[3] = be32(p + (v9 ? 16 : 12));
            row[4] = be32(p + (v9 ? 12 : 8));
            row[5] = (int64_t)be32(p + (v9 ? 8 : 4)) * 1000;
            row[6] = v9 ? be32(p + 4) : 0;
            Py_ssize_t first = set_count;
            int bad = walk_sets(buffer, i, start + (v9 ? V9_HEADER : IPFIX_HEADER), start + length, v9, set_rows,
                                &set_count);
            if (bad) set_count = first; /* a bad message keeps none of its sets */
            row[2] = !bad;
        }
        start += length;
    }
    result = Py_BuildValue("(On)", joined, set_count);
done:
    Py_XDECREF(joined);
    PyBuffer_Release(&heads);
    PyBuffer_Release(&sets);
    return result;
}

PyDoc_STRVAR(gather_doc,
"gather(buffer, starts, counts, record_length, export_ms, uptime_ms, received_ms, order_start, sampling,\n"
"       records, export_out, uptime_out, received_out, order_out, sampling_out) -> int\n\n"
"The records of data sets (int64 `starts`: body offsets in `buffer`, `counts`: records per set) end\n"
"to end into `records`, and the sets' header values (int64 per set; `sampling` uint32) repeated per\n"
"record into the int64 columns (`sampling_out` uint32, or empty: not wanted); record r of set j\n"
"gets arrival order order_start[j] + r. Returns the number of records written.");

static PyObject *gather(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buffer, starts, counts, export_ms, uptime_ms, received_ms, order_start, sampling, records, export_out,
        uptime_out, received_out, order_out, sampling_out;
    Py_ssize_t record_length;
    if (!PyArg_ParseTuple(args, "y*y*y*ny*y*y*y*y*w*w*w*w*w*w*", &buffer, &starts, &counts, &record_length,
                          &export_ms, &uptime_ms, &received_ms, &order_start, &sampling, &records, &export_out,
                          &uptime_out, &received_out, &order_out, &sampling_out))
        return NULL;
    Py_buffer *views[] = {&buffer, &starts, &counts, &export_ms, &uptime_ms, &received_ms, &order_start, &sampling,
                          &records, &export_out, &uptime_out, &received_out, &order_out, &sampling_out};
    PyObject *result = NULL;
    Py_ssize_t sets = starts.len / 8, written = 0;
    if (record_length <= 0) {
        PyErr_Format(PyExc_ValueError, "record length %zd", record_length);
        goto done;
    }
    Py_ssize_t capacity = records.len / record_length;
    int with_sampling = sampling_out.len > 0;
    if (need(&counts, sets, "counts") < 0 || need(&export_ms, sets, "export_ms") < 0 ||
        need(&uptime_ms, sets, "uptime_ms") < 0 || need(&received_ms, sets, "received_ms") < 0 ||
        need(&order_start, sets, "order_start") < 0 || need(&export_out, capacity, "export_out") < 0 ||
        need(&uptime_out, capacity, "uptime_out") < 0 || need(&received_out, capacity, "received_out") < 0 ||
        need(&order_out, capacity, "order_out") < 0 ||
        (with_sampling && (sampling.len < sets * 4 || sampling_out.len < capacity * 4))) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "sampling: buffers too short");
        goto done;
    }
    const unsigned char *in = (const unsigned char *)buffer.buf;
    const int64_t *start = (const int64_t *)starts.buf, *count = (const int64_t *)counts.buf;
    const int64_t *export_in = (const int64_t *)export_ms.buf, *uptime_in = (const int64_t *)uptime_ms.buf;
    const int64_t *received_in = (const int64_t *)received_ms.buf, *order_in = (const int64_t *)order_start.buf;
    const uint32_t *sampling_in = (const uint32_t *)sampling.buf;
    unsigned char *record_out = (unsigned char *)records.buf;
    int64_t *restrict export_to = (int64_t *)export_out.buf, *restrict uptime_to = (int64_t *)uptime_out.buf;
    int64_t *restrict received_to = (int64_t *)received_out.buf, *restrict order_to = (int64_t *)order_out.buf;
    uint32_t *restrict sampling_to = (uint32_t *)sampling_out.buf;
    for (Py_ssize_t j = 0; j < sets; j++) {
        Py_ssize_t n = (Py_ssize_t)count[j], bytes = n * record_length;
        if (n < 0 || start[j] < 0 || start[j] + bytes > buffer.len || written + n > capacity) {
            PyErr_Format(PyExc_ValueError, "set %zd: %zd records at %lld do not fit", j, n, (long long)start[j]);
            goto done;
        }
        memcpy(record_out + written * record_length, in + start[j], (size_t)bytes);
        const int64_t export_value = export_in[j], uptime_value = uptime_in[j], received_value = received_in[j];
        const int64_t first = order_in[j];
        for (Py_ssize_t r = 0; r < n; r++) {
            export_to[written + r] = export_value;
            uptime_to[written + r] = uptime_value;
            received_to[written + r] = received_value;
            order_to[written + r] = first + r;
        }
        if (with_sampling)
            for (Py_ssize_t r = 0; r < n; r++) sampling_to[written + r] = sampling_in[j];
        written += n;
    }
    result = PyLong_FromSsize_t(written);
done:
    for (size_t k = 0; k < sizeof(views) / sizeof(views[0]); k++) PyBuffer_Release(views[k]);
    return result;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, walk_doc},
    {"gather", gather, METH_VARARGS, gather_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "flowscope.decode._walkkernel",
    "The batch walk's loops, compiled (see walkkernel.py).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__walkkernel(void) {
    payload_name = PyUnicode_InternFromString("payload");
    exporter_name = PyUnicode_InternFromString("exporter");
    received_name = PyUnicode_InternFromString("time_received_ms");
    if (payload_name == NULL || exporter_name == NULL || received_name == NULL) return NULL;
    return PyModule_Create(&module);
}
