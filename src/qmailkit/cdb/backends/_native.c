/* qmailkit.cdb.backends._native: the cdb writer in C, for speed.
 *
 * Maker(fd) writes a cdb to fd, which must be an empty file positioned at 0:
 * a zeroed 2048-byte header, the records as they are added (through a 64 KiB
 * buffer), and at finish() the 256 hash tables, then the real header with
 * pwrite at offset 0.  The tables are laid out as djb's cdbmake lays them out
 * (records in each table in the order they were added, linear probing), so the
 * bytes equal tinycdb's `cdb -c` and freecdb's `cdbmake` for the same records.
 *
 * feed_cdbmake() parses cdbmake input straight from a buffer.  It takes only
 * records it can see whole and prove well-formed, and stops before anything
 * else: the Python parser (text.py) then reads that record and reports any
 * error with its line number, so there is one place that words errors.
 */
#define _GNU_SOURCE /* sync_file_range */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define HEADER_SIZE 2048
#define OUT_SIZE (1 << 20)
/* Every offset is 32 bits: a cdb cannot exceed 4 GiB. */
#define MAX_SIZE 0xFFFFFFFFull
/* What a record costs beyond its key and data: its header and two hash slots. */
#define RECORD_OVERHEAD (8 + 16)

typedef struct {
    uint32_t hash;
    uint32_t pos;
} Slot;

typedef struct {
    PyObject_HEAD
    int fd;
    int finished;
    uint64_t pos; /* file offset of the next record */
    uint64_t flushed; /* bytes handed to write() so far */
    unsigned char *out;
    size_t outlen;
    Slot *slots;
    size_t count;
    size_t capacity;
} Maker;

static uint32_t
djb_hash(const unsigned char *p, size_t n)
{
    uint32_t h = 5381;
    while (n--)
        h = ((h << 5) + h) ^ *p++;
    return h;
}

static void
pack32(unsigned char *p, uint32_t v)
{
    p[0] = v & 255;
    p[1] = (v >> 8) & 255;
    p[2] = (v >> 16) & 255;
    p[3] = v >> 24;
}

static int
write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t done = write(fd, p, n);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        p += done;
        n -= (size_t)done;
    }
    return 0;
}

static int
flush_out(Maker *m)
{
    if (write_all(m->fd, m->out, m->outlen) < 0)
        return -1;
#ifdef SYNC_FILE_RANGE_WRITE
    /* Start writing this part to disk now, so the caller's fsync has less left to wait for. */
    (void)sync_file_range(m->fd, (off_t)m->flushed, (off_t)m->outlen, SYNC_FILE_RANGE_WRITE);
#endif
    m->flushed += m->outlen;
    m->outlen = 0;
    return 0;
}

static int
put(Maker *m, const unsigned char *p, size_t n)
{
    if (m->outlen + n > OUT_SIZE) {
        if (flush_out(m) < 0)
            return -1;
        if (n > OUT_SIZE) {
            if (write_all(m->fd, p, n) < 0)
                return -1;
            m->flushed += n;
            return 0;
        }
    }
    memcpy(m->out + m->outlen, p, n);
    m->outlen += n;
    return 0;
}

/* Would one more record of n bytes push the finished file past 4 GiB? */
static int
too_big(Maker *m, uint64_t n)
{
    return m->pos + 16 * (uint64_t)m->count + n + RECORD_OVERHEAD > MAX_SIZE;
}

static int
add_record(Maker *m, const unsigned char *key, size_t klen, const unsigned char *data,
           size_t dlen)
{
    unsigned char head[8];

    if (m->finished) {
        PyErr_SetString(PyExc_ValueError, "the cdb is already finished");
        return -1;
    }
    if (too_big(m, (uint64_t)klen + dlen)) {
        PyErr_SetString(PyExc_OverflowError, "a cdb cannot exceed 4 GiB");
        return -1;
    }
    if (m->count == m->capacity) {
        size_t capacity = m->capacity ? 2 * m->capacity : 4096;
        Slot *grown = PyMem_Realloc(m->slots, capacity * sizeof(Slot));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        m->slots = grown;
        m->capacity = capacity;
    }
    pack32(head, (uint32_t)klen);
    pack32(head + 4, (uint32_t)dlen);
    if (put(m, head, 8) < 0 || put(m, key, klen) < 0 || put(m, data, dlen) < 0)
        return -1;
    m->slots[m->count].hash = djb_hash(key, klen);
    m->slots[m->count].pos = (uint32_t)m->pos;
    m->count++;
    m->pos += 8 + klen + dlen;
    return 0;
}

static int
Maker_init(Maker *m, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"fd", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", names, &m->fd))
        return -1;
    if (m->out == NULL && (m->out = PyMem_Malloc(OUT_SIZE)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(m->out, 0, HEADER_SIZE);
    m->outlen = HEADER_SIZE;
    m->pos = HEADER_SIZE;
    m->flushed = 0;
    m->count = 0;
    m->finished = 0;
    return 0;
}

static void
Maker_dealloc(Maker *m)
{
    PyMem_Free(m->out);
    PyMem_Free(m->slots);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *
Maker_add(Maker *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "add(key, value) takes two bytes objects");
        return NULL;
    }
    if (add_record(m, (unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]),
                   (unsigned char *)PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1])) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Maker_add_many(Maker *m, PyObject *args)
{
    PyObject *keys, *values, *result = NULL;
    Py_ssize_t i, n;

    if (!PyArg_ParseTuple(args, "OO:add_many", &keys, &values))
        return NULL;
    keys = PySequence_Fast(keys, "keys must be a sequence");
    if (keys == NULL)
        return NULL;
    values = PySequence_Fast(values, "values must be a sequence");
    if (values == NULL)
        goto done_keys;
    n = PySequence_Fast_GET_SIZE(keys);
    if (PySequence_Fast_GET_SIZE(values) != n) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in length");
        goto done;
    }
    for (i = 0; i < n; i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(keys, i);
        PyObject *value = PySequence_Fast_GET_ITEM(values, i);
        if (!PyBytes_Check(key) || !PyBytes_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "cdb keys and values must be bytes");
            goto done;
        }
        if (add_record(m, (unsigned char *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                       (unsigned char *)PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)) < 0)
            goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_DECREF(values);
done_keys:
    Py_DECREF(keys);
    return result;
}

static Py_ssize_t
count_lines(const unsigned char *p, Py_ssize_t n)
{
    const unsigned char *end = p + n;
    Py_ssize_t lines = n ? 1 : 0;
    while ((p = memchr(p, '\n', end - p)) != NULL) {
        p++;
        lines++;
    }
    return lines;
}

static PyObject *
Maker_add_lines(Maker *m, PyObject *args)
{
    Py_buffer keys, values = {0};
    PyObject *given = Py_None, *result = NULL;
    const unsigned char *k, *kend, *v = NULL, *vend = NULL;
    Py_ssize_t count, i;

    if (!PyArg_ParseTuple(args, "y*|O:add_lines", &keys, &given))
        return NULL;
    if (given != Py_None && PyObject_GetBuffer(given, &values, PyBUF_SIMPLE) < 0)
        goto out;
    count = count_lines(keys.buf, keys.len);
    if (given != Py_None && count_lines(values.buf, values.len) != count
        && !(count == 1 && values.len == 0)) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in number");
        goto out;
    }
    k = keys.buf;
    kend = k + keys.len;
    if (given != Py_None) {
        v = values.buf;
        vend = v + values.len;
    }
    for (i = 0; i < count; i++) {
        const unsigned char *knl = memchr(k, '\n', kend - k), *vnl = NULL;
        size_t klen = (knl ? knl : kend) - k, dlen = 0;
        if (v != NULL) {
            vnl = memchr(v, '\n', vend - v);
            dlen = (vnl ? vnl : vend) - v;
        }
        if (add_record(m, k, klen, v ? v : k, dlen) < 0)
            goto out;
        k += klen + 1;
        if (v != NULL)
            v += dlen + 1;
    }
    result = PyLong_FromSsize_t(count);
out:
    PyBuffer_Release(&keys);
    if (values.obj != NULL)
        PyBuffer_Release(&values);
    return result;
}

/* Digits up to the stop byte; 0 if there are none, more than 10, or no stop byte. */
static const unsigned char *
parse_length(const unsigned char *p, const unsigned char *end, unsigned char stop,
             uint64_t *length)
{
    const unsigned char *first = p;
    uint64_t n = 0;
    while (p < end && *p >= '0' && *p <= '9' && p - first < 10)
        n = 10 * n + (*p++ - '0');
    if (p == first || p == end || *p != stop)
        return NULL;
    *length = n;
    return p + 1;
}

static PyObject *
Maker_feed_cdbmake(Maker *m, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start;
    const unsigned char *p, *end;
    uint64_t records = 0, nbytes = 0;
    int done = 0;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*n:feed_cdbmake", &view, &start))
        return NULL;
    if (start < 0 || start > view.len) {
        PyErr_SetString(PyExc_ValueError, "start lies outside the buffer");
        goto out;
    }
    p = (const unsigned char *)view.buf + start;
    end = (const unsigned char *)view.buf + view.len;
    while (p < end) {
        const unsigned char *q, *key;
        uint64_t klen, dlen;
        if (*p == '\n') { /* the closing blank line */
            p++;
            done = 1;
            break;
        }
        if (*p != '+')
            break;
        q = parse_length(p + 1, end, ',', &klen);
        if (q == NULL || (q = parse_length(q, end, ':', &dlen)) == NULL)
            break;
        if ((uint64_t)(end - q) < klen + dlen + 3 || too_big(m, klen + dlen))
            break;
        key = q;
        q += klen;
        if (q[0] != '-' || q[1] != '>' || q[2 + dlen] != '\n')
            break;
        if (add_record(m, key, klen, q + 2, dlen) < 0)
            goto out;
        p = q + 3 + dlen;
        records++;
        nbytes += klen + dlen;
    }
    result = Py_BuildValue("nKKO", (Py_ssize_t)(p - (const unsigned char *)view.buf),
                           (unsigned long long)records, (unsigned long long)nbytes,
                           done ? Py_True : Py_False);
out:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
Maker_finish(Maker *m, PyObject *Py_UNUSED(ignored))
{
    uint32_t counts[256] = {0}, starts[256], cursor[256];
    unsigned char header[HEADER_SIZE], pair[8];
    Slot *sorted = NULL, *table = NULL;
    size_t i, u, most = 1;
    uint64_t pos;
    PyObject *result = NULL;

    if (m->finished) {
        PyErr_SetString(PyExc_ValueError, "the cdb is already finished");
        return NULL;
    }
    if (m->pos + 16 * (uint64_t)m->count > MAX_SIZE) {
        PyErr_SetString(PyExc_OverflowError, "a cdb cannot exceed 4 GiB");
        return NULL;
    }
    for (i = 0; i < m->count; i++)
        counts[m->slots[i].hash & 255]++;
    for (i = 0, u = 0; i < 256; i++) {
        starts[i] = cursor[i] = (uint32_t)u;
        u += counts[i];
        if (2 * (size_t)counts[i] > most)
            most = 2 * (size_t)counts[i];
    }
    sorted = PyMem_Malloc((m->count ? m->count : 1) * sizeof(Slot));
    table = PyMem_Malloc(most * sizeof(Slot));
    if (sorted == NULL || table == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    /* A stable bucket sort: each table gets its records in the order they came. */
    for (i = 0; i < m->count; i++)
        sorted[cursor[m->slots[i].hash & 255]++] = m->slots[i];

    pos = m->pos;
    for (i = 0; i < 256; i++) {
        size_t len = 2 * (size_t)counts[i];
        pack32(header + 8 * i, (uint32_t)pos);
        pack32(header + 8 * i + 4, (uint32_t)len);
        memset(table, 0, len * sizeof(Slot));
        for (u = 0; u < counts[i]; u++) {
            Slot slot = sorted[starts[i] + u];
            size_t where = (slot.hash >> 8) % len;
            while (table[where].pos) /* records start at 2048, so 0 means empty */
                if (++where == len)
                    where = 0;
            table[where] = slot;
        }
        for (u = 0; u < len; u++) {
            pack32(pair, table[u].hash);
            pack32(pair + 4, table[u].pos);
            if (put(m, pair, 8) < 0)
                goto out;
        }
        pos += 8 * len;
    }
    if (flush_out(m) < 0)
        goto out;
    for (u = 0; u < HEADER_SIZE;) {
        ssize_t done = pwrite(m->fd, header + u, HEADER_SIZE - u, (off_t)u);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            PyErr_SetFromErrno(PyExc_OSError);
            goto out;
        }
        u += (size_t)done;
    }
    m->finished = 1;
    result = Py_NewRef(Py_None);
out:
    PyMem_Free(sorted);
    PyMem_Free(table);
    return result;
}

static PyObject *
Maker_get_count(Maker *m, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(m->count);
}

static PyMethodDef Maker_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Maker_add, METH_FASTCALL,
     "add(key, value): append one record (both bytes)."},
    {"add_many", (PyCFunction)Maker_add_many, METH_VARARGS,
     "add_many(keys, values): append records from two equally long sequences of bytes."},
    {"add_lines", (PyCFunction)Maker_add_lines, METH_VARARGS,
     "add_lines(keys, values=None) -> records\n\n"
     "Add records whose keys (and values) are the lines of newline-separated bytes\n"
     "(no final newline; empty bytes hold none); values None: every value is empty."},
    {"feed_cdbmake", (PyCFunction)Maker_feed_cdbmake, METH_VARARGS,
     "feed_cdbmake(buffer, start) -> (stop, records, nbytes, done)\n\n"
     "Add the whole, well-formed cdbmake records of buffer[start:]; stop before the first\n"
     "record that is not (cut off by the buffer's end, malformed, or too big for the\n"
     "format).  done is True when the closing blank line was read."},
    {"finish", (PyCFunction)Maker_finish, METH_NOARGS,
     "finish(): write the hash tables and the header."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Maker_getset[] = {
    {"count", (getter)Maker_get_count, NULL, "records added so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "qmailkit.cdb.backends._native.Maker",
    .tp_doc = "Maker(fd): writes a cdb to the empty file fd.",
    .tp_basicsize = sizeof(Maker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Maker_init,
    .tp_dealloc = (destructor)Maker_dealloc,
    .tp_methods = Maker_methods,
    .tp_getset = Maker_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "qmailkit.cdb.backends._native",
    .m_doc = "djb's cdb format written in C (qmailkit's fast path).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *mod;
    if (PyType_Ready(&MakerType) < 0)
        return NULL;
    mod = PyModule_Create(&module);
    if (mod == NULL)
        return NULL;
    if (PyModule_AddObjectRef(mod, "Maker", (PyObject *)&MakerType) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
