/* qmailkit.qmail._vpasswd: mailbox names from a vpasswd file, in C; and the
 * usual case of reading one of the many small files mkvalidrcptto reads.
 *
 * Reading every domain's vpasswd is most of mkvalidrcptto's work on a big
 * vpopmail install, and all it needs from a line is the name before the
 * first colon.  names() does only the usual case and answers None for
 * anything else (a damaged line, or a name no mail can reach: with capitals,
 * which vdelivermail never matches, or a NUL); qmailkit.qmail.vpopmail.
 * mailbox_names then does the careful reading in Python, which names the line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A vpasswd line is name:hash:uid:gid:gecos:dir:quota[:clear]. */
#define MIN_COLONS 6

static PyObject *
names(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view;
    const char *p, *end, *suffix = "";
    Py_ssize_t suffix_len = 0;
    PyObject *list = NULL;
    Py_ssize_t lines = 0, i = 0;

    if (!PyArg_ParseTuple(args, "y*|y#", &view, &suffix, &suffix_len))
        return NULL;
    p = view.buf;
    end = p + view.len;
    if (p < end && end[-1] == '\n')
        end--; /* the last line's newline */
    if (p < end)
        for (const char *q = p; q != NULL; lines++)
            if ((q = memchr(q, '\n', end - q)) != NULL)
                q++;
    if ((list = PyList_New(lines)) == NULL)
        goto out;
    for (i = 0; i < lines; i++) {
        const char *eol = memchr(p, '\n', end - p), *colon, *q;
        PyObject *name;
        int colons = 0;

        if (eol == NULL)
            eol = end;
        colon = memchr(p, ':', eol - p);
        if (colon == NULL || colon == p)
            goto malformed;
        for (q = colon; q != NULL && colons < MIN_COLONS; colons++)
            if ((q = memchr(q, ':', eol - q)) != NULL)
                q++;
        if (q == NULL)
            goto malformed;
        for (q = p; q < colon; q++)
            if ((*q >= 'A' && *q <= 'Z') || *q == '\0')
                goto malformed;
        if ((name = PyBytes_FromStringAndSize(NULL, colon - p + suffix_len)) == NULL)
            goto error;
        memcpy(PyBytes_AS_STRING(name), p, colon - p);
        memcpy(PyBytes_AS_STRING(name) + (colon - p), suffix, suffix_len);
        PyList_SET_ITEM(list, i, name);
        p = eol + 1;
    }
    goto out;
malformed:
    Py_CLEAR(list);
    list = Py_NewRef(Py_None);
    goto out;
error:
    Py_CLEAR(list);
out:
    PyBuffer_Release(&view);
    return list;
}

/* read_regular(path, limit): the bytes of a regular file of at most limit bytes,
 * opened non-blocking (a FIFO or a device cannot hang it) and checked with fstat;
 * None for anything else (missing, not regular, too big, any error), for
 * qmailkit.fsutil to open again and say what is wrong.  The hot loop reads tens
 * of thousands of small files: this is open_regular's usual case in one call. */
static PyObject *
read_regular(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *path, *data = NULL;
    Py_ssize_t limit, got;
    struct stat st;
    int fd;

    if (!PyArg_ParseTuple(args, "O&n", PyUnicode_FSConverter, &path, &limit))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    fd = open(PyBytes_AS_STRING(path), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (fd < 0)
        Py_RETURN_NONE;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > limit)
        goto none;
    /* one byte more than fstat says: a file that grew is read again by fsutil */
    if ((data = PyBytes_FromStringAndSize(NULL, st.st_size + 1)) == NULL)
        goto out;
    Py_BEGIN_ALLOW_THREADS
    got = read(fd, PyBytes_AS_STRING(data), st.st_size + 1);
    Py_END_ALLOW_THREADS
    if (got < 0 || got > st.st_size) {
        Py_CLEAR(data);
        goto none;
    }
    if (_PyBytes_Resize(&data, got) < 0)
        goto out;
    goto out;
none:
    data = Py_NewRef(Py_None);
out:
    close(fd);
    return data;
}

static PyMethodDef methods[] = {
    {"names", names, METH_VARARGS,
     "names(data, suffix=b'') -> list[bytes] | None\n\n"
     "The names of a vpasswd file's lines, each followed by suffix, when every line\n"
     "has a name without capitals or NUL and at least six colons; None otherwise\n"
     "(blank lines included)."},
    {"read_regular", read_regular, METH_VARARGS,
     "read_regular(path, limit) -> bytes | None\n\n"
     "A regular file's bytes (at most limit), opened O_NONBLOCK and checked with\n"
     "fstat; None for anything else (fsutil then says what)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "qmailkit.qmail._vpasswd",
    .m_doc = "vpasswd mailbox names in C (qmailkit's fast path).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__vpasswd(void)
{
    return PyModule_Create(&module);
}
