/*
 * NetFlow v5 kernel: a batch of v5 datagrams straight to flow columns, in two compiled passes.
 *
 * Why C: a NetFlow v5 datagram is 24 header bytes and up to 30 fixed 48-byte records; with numpy
 * the cheapest column pipeline still costs ~20 ns a flow (bench/v5_floor.py), while the `netflow`
 * package's own v5 parser (one struct.unpack per record) leaves a 16 ns budget for 100x its speed.
 * `scan` reads the headers and checks the sequence numbers per exporter scope; `fill` reads each
 * record once and writes every flow column. The results are those of the decoder's and the
 * normalizer's numpy paths, which tests check column for column; without this module those paths
 * run (v5kernel.py holds the Python side).
 *
 * No numpy C API: arrays are passed in as writable buffers made by the caller. No Python object
 * is made per record. Every length is checked before it is used: a batch that holds anything but
 * plain v5 messages makes `scan` return -1, and the caller takes the general path, which counts
 * what is wrong.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define V5_HEADER 24
#define V5_RECORD 48
/* per datagram: exporter code, domain, sequence, export ms, uptime ms, received ms, count, sampling, scope */
#define HEAD_COLUMNS 9

static PyObject *payload_name, *exporter_name, *received_name;

/* Unaligned loads through memcpy (one instruction where the target allows it). */
static inline uint32_t native32(const unsigned char *p) {
    uint32_t value;
    memcpy(&value, p, 4);
    return value;
}

#if PY_LITTLE_ENDIAN && (defined(__GNUC__) || defined(__clang__))
static inline uint32_t be32(const unsigned char *p) { return __builtin_bswap32(native32(p)); }
static inline uint16_t be16(const unsigned char *p) {
    uint16_t value;
    memcpy(&value, p, 2);
    return __builtin_bswap16(value);
}
#else
static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}
static inline uint16_t be16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }
#endif

/* Bytes 8-15 of an IPv4-mapped address (00 00 ff ff, then the IPv4 address), read as a native
 * integer; the address bytes go above it unchanged. */
#if PY_LITTLE_ENDIAN
#define MAPPED_HIGH(address) (UINT64_C(0xFFFF0000) | (uint64_t)(address) << 32)
#else
#define MAPPED_HIGH(address) (UINT64_C(0xFFFF) << 32 | (uint64_t)(address))
#endif

/* A writable buffer of at least `items` items of `itemsize` bytes, C-contiguous. */
static int need(Py_buffer *view, Py_ssize_t items, Py_ssize_t itemsize, const char *what) {
    if (view->len < items * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, %zd needed", what, view->len, items * itemsize);
        return -1;
    }
    return 0;
}

/* The payload of a Datagram as bytes (borrowed data, new reference in *holder), or NULL. */
static const unsigned char *payload_of(PyObject *datagram, PyObject **holder, Py_ssize_t *length) {
    PyObject *payload = PyObject_GetAttr(datagram, payload_name);
    if (payload == NULL) return NULL;
    if (!PyBytes_Check(payload)) {
        Py_DECREF(payload);
        return NULL;
    }
    *holder = payload;
    *length = PyBytes_GET_SIZE(payload);
    return (const unsigned char *)PyBytes_AS_STRING(payload);
}

/* Exporter scopes of a batch, (exporter code, v5 engine) in order of first arrival, found through
 * a small open-addressing table keyed by code << 16 | engine. */
typedef struct {
    int64_t key, first_sequence, expected, records, messages, broken;
} Scope;

typedef struct {
    Scope *scopes;
    Py_ssize_t *slots; /* index into scopes + 1; 0: empty */
    Py_ssize_t mask, count;
} ScopeTable;

static int scopes_init(ScopeTable *table, Py_ssize_t datagrams) {
    Py_ssize_t size = 16;
    while (size < 2 * datagrams) size <<= 1;
    table->scopes = PyMem_Malloc(sizeof(Scope) * (size_t)(datagrams > 0 ? datagrams : 1));
    table->slots = PyMem_Calloc((size_t)size, sizeof(Py_ssize_t));
    table->mask = size - 1;
    table->count = 0;
    if (table->scopes == NULL || table->slots == NULL) {
        PyMem_Free(table->scopes);
        PyMem_Free(table->slots);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void scopes_free(ScopeTable *table) {
    PyMem_Free(table->scopes);
    PyMem_Free(table->slots);
}

/* The message with this key, sequence and record count into its scope; returns the scope's index. */
static Py_ssize_t scopes_observe(ScopeTable *table, int64_t key, int64_t sequence, int64_t count) {
    Py_ssize_t slot = (Py_ssize_t)((uint64_t)key * UINT64_C(0x9E3779B97F4A7C15) >> 40) & table->mask;
    while (table->slots[slot] && table->scopes[table->slots[slot] - 1].key != key) slot = (slot + 1) & table->mask;
    int64_t following = (sequence + count) & 0xFFFFFFFF;
    if (!table->slots[slot]) {
        Scope *scope = &table->scopes[table->count];
        scope->key = key;
        scope->first_sequence = sequence;
        scope->expected = following;
        scope->records = count;
        scope->messages = 1;
        scope->broken = 0;
        table->slots[slot] = ++table->count;
        return table->count - 1;
    }
    Scope *scope = &table->scopes[table->slots[slot] - 1];
    scope->broken |= sequence != scope->expected;
    scope->expected = following;
    scope->records += count;
    scope->messages += 1;
    return table->slots[slot] - 1;
}

PyDoc_STRVAR(scan_doc,
"scan(datagrams, codes, exporters, heads) -> (records, scopes) or None\n\n"
"The header of every datagram into `heads` (int64, 9 per datagram: exporter code, domain,\n"
"sequence, export ms, uptime ms, received ms, record count, sampling interval, scope). Exporters\n"
"get codes in order of first appearance (`codes` maps address to code, `exporters` lists them).\n"
"`scopes` lists the exporter scopes in order of first arrival as (code, domain, first sequence,\n"
"sequence after the last message, records, messages, broken): broken if a message does not\n"
"continue its predecessor's numbers. None if any datagram is not a NetFlow v5 message whose\n"
"length matches its record count.");

static PyObject *scan(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *datagrams, *codes, *exporters, *result = NULL;
    Py_buffer heads;
    if (!PyArg_ParseTuple(args, "O!O!O!w*", &PyList_Type, &datagrams, &PyDict_Type, &codes, &PyList_Type,
                          &exporters, &heads))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(datagrams);
    long long total = 0;
    int usable = 1;
    ScopeTable table;
    if (need(&heads, n * HEAD_COLUMNS, 8, "heads") < 0) {
        PyBuffer_Release(&heads);
        return NULL;
    }
    if (scopes_init(&table, n) < 0) {
        PyBuffer_Release(&heads);
        return NULL;
    }
    int64_t *out = (int64_t *)heads.buf;
    for (Py_ssize_t i = 0; i < n && usable; i++) {
        PyObject *datagram = PyList_GET_ITEM(datagrams, i), *holder = NULL;
        Py_ssize_t length = 0;
        const unsigned char *p = payload_of(datagram, &holder, &length);
        if (p == NULL) {
            if (PyErr_Occurred()) goto done;
            usable = 0;
            break;
        }
        usable = length >= V5_HEADER && be16(p) == 5;
        uint16_t count = usable ? be16(p + 2) : 0;
        usable = usable && count > 0 && length == V5_HEADER + (Py_ssize_t)count * V5_RECORD;
        int64_t *row = out + i * HEAD_COLUMNS;
        if (usable) {
            row[1] = p[20] << 8 | p[21]; /* engine type << 8 | engine id, as nfdump */
            row[2] = be32(p + 16);
            row[3] = (int64_t)be32(p + 8) * 1000 + be32(p + 12) / 1000000;
            row[4] = be32(p + 4);
            row[6] = count;
            row[7] = be16(p + 22) & 0x3FFF; /* the top two bits are the sampling mode */
        }
        Py_DECREF(holder);
        if (!usable) break;
        total += count;
        PyObject *exporter = PyObject_GetAttr(datagram, exporter_name);
        if (exporter == NULL) goto done;
        PyObject *code = PyDict_GetItemWithError(codes, exporter); /* borrowed */
        if (code == NULL) {
            if (PyErr_Occurred() || (code = PyLong_FromSsize_t(PyList_GET_SIZE(exporters))) == NULL) {
                Py_DECREF(exporter);
                goto done;
            }
            int failed = PyDict_SetItem(codes, exporter, code) < 0 || PyList_Append(exporters, exporter) < 0;
            Py_DECREF(code); /* the dict holds it */
            if (failed) {
                Py_DECREF(exporter);
                goto done;
            }
        }
        Py_DECREF(exporter);
        row[0] = PyLong_AsLongLong(code);
        PyObject *received = PyObject_GetAttr(datagram, received_name);
        if (received == NULL) goto done;
        row[5] = PyLong_AsLongLong(received);
        Py_DECREF(received);
        if (PyErr_Occurred()) goto done;
        row[8] = scopes_observe(&table, row[0] << 16 | row[1], row[2], row[6]);
    }
    if (!usable) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *scopes = PyList_New(table.count);
    if (scopes == NULL) goto done;
    for (Py_ssize_t k = 0; k < table.count; k++) {
        const Scope *scope = &table.scopes[k];
        PyObject *item = Py_BuildValue("(LLLLLLO)", (long long)(scope->key >> 16), (long long)(scope->key & 0xFFFF),
                                       (long long)scope->first_sequence, (long long)scope->expected,
                                       (long long)scope->records, (long long)scope->messages,
                                       scope->broken ? Py_True : Py_False);
        if (item == NULL) {
            Py_DECREF(scopes);
            goto done;
        }
        PyList_SET_ITEM(scopes, k, item);
    }
    result = Py_BuildValue("(LN)", total, scopes);
done:
    scopes_free(&table);
    PyBuffer_Release(&heads);
    return result;
}

PyDoc_STRVAR(fill_doc,
"fill(datagrams, heads, exporter_index, multiply, time_received, time_start, time_end, exporter,\n"
"     src_addr, dst_addr, src_port, dst_port, protocol, tcp_flags, tos, packets, bytes, in_if, out_if,\n"
"     src_as, dst_as, sampling_rate) -> int\n\n"
"The records of the datagrams `scan` read (with its `heads`) into the flow columns, in wire order:\n"
"addresses IPv4-mapped, integers in native order, first/last switched (uptime-relative, modulo\n"
"2**32) to UTC ms, the exporter column from `exporter_index` (uint32 per scope), the sampling rate\n"
"max(1, header interval), packets and bytes multiplied by it if `multiply`. Returns the rows written.");

static PyObject *fill(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *datagrams;
    int multiply;
    Py_buffer heads, exporter_index, time_received, time_start, time_end, exporter, src_addr, dst_addr, src_port,
        dst_port, protocol, tcp_flags, tos, packets, bytes, in_if, out_if, src_as, dst_as, sampling_rate;
    if (!PyArg_ParseTuple(args, "O!y*y*pw*w*w*w*w*w*w*w*w*w*w*w*w*w*w*w*w*w*", &PyList_Type, &datagrams, &heads,
                          &exporter_index, &multiply, &time_received, &time_start, &time_end, &exporter, &src_addr,
                          &dst_addr, &src_port, &dst_port, &protocol, &tcp_flags, &tos, &packets, &bytes, &in_if,
                          &out_if, &src_as, &dst_as, &sampling_rate))
        return NULL;
    Py_buffer *views[] = {&heads, &exporter_index, &time_received, &time_start, &time_end, &exporter, &src_addr,
                          &dst_addr, &src_port, &dst_port, &protocol, &tcp_flags, &tos, &packets, &bytes, &in_if,
                          &out_if, &src_as, &dst_as, &sampling_rate};
    PyObject *result = NULL;
    Py_ssize_t n = PyList_GET_SIZE(datagrams), scopes = exporter_index.len / 4, capacity = time_received.len / 8;
    Py_ssize_t written = 0;
    if (need(&heads, n * HEAD_COLUMNS, 8, "heads") < 0 || need(&time_start, capacity, 8, "time_start") < 0 ||
        need(&time_end, capacity, 8, "time_end") < 0 || need(&exporter, capacity, 4, "exporter") < 0 ||
        need(&src_addr, capacity, 16, "src_addr") < 0 || need(&dst_addr, capacity, 16, "dst_addr") < 0 ||
        need(&src_port, capacity, 2, "src_port") < 0 || need(&dst_port, capacity, 2, "dst_port") < 0 ||
        need(&protocol, capacity, 1, "protocol") < 0 || need(&tcp_flags, capacity, 1, "tcp_flags") < 0 ||
        need(&tos, capacity, 1, "tos") < 0 || need(&packets, capacity, 8, "packets") < 0 ||
        need(&bytes, capacity, 8, "bytes") < 0 || need(&in_if, capacity, 4, "in_if") < 0 ||
        need(&out_if, capacity, 4, "out_if") < 0 || need(&src_as, capacity, 4, "src_as") < 0 ||
        need(&dst_as, capacity, 4, "dst_as") < 0 || need(&sampling_rate, capacity, 4, "sampling_rate") < 0)
        goto done;
    const int64_t *head = (const int64_t *)heads.buf;
    const uint32_t *index_of_scope = (const uint32_t *)exporter_index.buf;
    int64_t *restrict received_out = (int64_t *)time_received.buf;
    int64_t *restrict start_out = (int64_t *)time_start.buf, *restrict end_out = (int64_t *)time_end.buf;
    uint32_t *restrict exporter_out = (uint32_t *)exporter.buf;
    uint64_t *restrict src = (uint64_t *)src_addr.buf, *restrict dst = (uint64_t *)dst_addr.buf;
    uint16_t *restrict sport = (uint16_t *)src_port.buf, *restrict dport = (uint16_t *)dst_port.buf;
    uint8_t *restrict proto = (uint8_t *)protocol.buf, *restrict flags = (uint8_t *)tcp_flags.buf;
    uint8_t *restrict tos_out = (uint8_t *)tos.buf;
    uint64_t *restrict packets_out = (uint64_t *)packets.buf, *restrict bytes_out = (uint64_t *)bytes.buf;
    uint32_t *restrict in_out = (uint32_t *)in_if.buf, *restrict out_out = (uint32_t *)out_if.buf;
    uint32_t *restrict src_as_out = (uint32_t *)src_as.buf, *restrict dst_as_out = (uint32_t *)dst_as.buf;
    uint32_t *restrict rate_out = (uint32_t *)sampling_rate.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t *row = head + i * HEAD_COLUMNS;
        Py_ssize_t count = (Py_ssize_t)row[6], length = 0;
        if (row[8] < 0 || row[8] >= scopes) {
            PyErr_Format(PyExc_IndexError, "datagram %zd: scope %lld of %zd", i, (long long)row[8], scopes);
            goto done;
        }
        PyObject *holder = NULL;
        const unsigned char *p = payload_of(PyList_GET_ITEM(datagrams, i), &holder, &length);
        if (p == NULL || length != V5_HEADER + count * V5_RECORD || written + count > capacity) {
            Py_XDECREF(holder);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "datagram %zd: not the %zd records scan saw, or no room", i, count);
            goto done;
        }
        const int64_t export_ms = row[3], uptime_ms = row[4], received_ms = row[5];
        const uint32_t exporter_value = index_of_scope[row[8]];
        const uint64_t rate = row[7] > 1 ? (uint64_t)row[7] : 1, multiplier = multiply ? rate : 1;
        p += V5_HEADER;
        for (Py_ssize_t r = written; r < written + count; r++, p += V5_RECORD) {
            received_out[r] = received_ms;
            /* how long before the export the flow started and ended: uptime difference modulo 2**32 */
            start_out[r] = export_ms - ((uptime_ms - (int64_t)be32(p + 24)) & 0xFFFFFFFF);
            end_out[r] = export_ms - ((uptime_ms - (int64_t)be32(p + 28)) & 0xFFFFFFFF);
            exporter_out[r] = exporter_value;
            /* ::ffff:a.b.c.d as two 8-byte words: zero, then 00 00 ff ff a b c d */
            src[2 * r] = 0;
            src[2 * r + 1] = MAPPED_HIGH(native32(p));
            dst[2 * r] = 0;
            dst[2 * r + 1] = MAPPED_HIGH(native32(p + 4));
            sport[r] = be16(p + 32);
            dport[r] = be16(p + 34);
            flags[r] = p[37];
            proto[r] = p[38];
            tos_out[r] = p[39];
            packets_out[r] = (uint64_t)be32(p + 16) * multiplier;
            bytes_out[r] = (uint64_t)be32(p + 20) * multiplier;
            in_out[r] = be16(p + 12);
            out_out[r] = be16(p + 14);
            src_as_out[r] = be16(p + 40);
            dst_as_out[r] = be16(p + 42);
            rate_out[r] = (uint32_t)rate;
        }
        Py_DECREF(holder);
        written += count;
    }
    result = PyLong_FromSsize_t(written);
done:
    for (size_t k = 0; k < sizeof(views) / sizeof(views[0]); k++) PyBuffer_Release(views[k]);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {"fill", fill, METH_VARARGS, fill_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "flowscope.decode._v5kernel",
    "NetFlow v5 kernel (see v5kernel.py for the Python side).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__v5kernel(void) {
    payload_name = PyUnicode_InternFromString("payload");
    exporter_name = PyUnicode_InternFromString("exporter");
    received_name = PyUnicode_InternFromString("time_received_ms");
    if (payload_name == NULL || exporter_name == NULL || received_name == NULL) return NULL;
    return PyModule_Create(&module);
}
