/* One timed read of a plain TCP socket, in C: the hot path of bench.clients.http._StampedSocket.

read(fd, buffer, clock, times, datas, at_chunk) does what _StampedSocket._read_in_python does, without
the interpreter's work per read and per chunk:

  - one recvmsg into `buffer` (a writable buffer), with the kernel's receive time (SO_TIMESTAMPNS);
  - the read's arrival time on perf_counter_ns's clock (CLOCK_MONOTONIC): the kernel's time less
    `clock.offset_ns` where it is believed, else the read's own time, and `clock`'s counters
    (reads, late_reads, max_read_lag_ns, unbelieved) kept as the Python path keeps them;
  - where `at_chunk` is true (the response is at a chunk boundary with nothing pending), every whole
    chunk at the start of the read is appended to `times` (the arrival time) and `datas` (its bytes),
    as _Connection.feed's quick path would.

It returns None when the read was all whole chunks, else (rest, arrival time): the bytes it did not
take (b"" at end of file), for _Connection.feed. It raises OSError (BlockingIOError when there is
nothing to read) as socket.recvmsg_into does. A chunk it does not take (a last one, one cut short, a
size that is not plain hex digits) is left, with all after it, to the Python parser, which says what
it is: so this takes only what the Python parser would take in the very same way. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#ifndef SO_TIMESTAMPNS
#define SO_TIMESTAMPNS 35
#endif
#ifndef SCM_TIMESTAMPNS
#define SCM_TIMESTAMPNS SO_TIMESTAMPNS
#endif

static PyObject *s_offset_ns, *s_reads, *s_late_reads, *s_max_read_lag_ns, *s_unbelieved;
/* bench.clients.http's bounds, set once by configure() so both paths read the same numbers */
static long long late_read_ns = -1, max_stamp_age_ns = -1, unbelieved_ahead_ns = -1;

/* obj.name as a long long; -1 with an error set where it is missing or not an int */
static int
get_int(PyObject *obj, PyObject *name, long long *out)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    *out = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int
set_int(PyObject *obj, PyObject *name, long long value)
{
    PyObject *number = PyLong_FromLongLong(value);
    if (number == NULL)
        return -1;
    int failed = PyObject_SetAttr(obj, name, number);
    Py_DECREF(number);
    return failed;
}

static int
add_one(PyObject *obj, PyObject *name)
{
    long long value;
    return get_int(obj, name, &value) < 0 ? -1 : set_int(obj, name, value + 1);
}

/* The arrival time of a read made at read_ns that carried the kernel's time `kernel` (CLOCK_REALTIME). */
static int
arrival(PyObject *clock, long long read_ns, long long kernel, long long *now)
{
    long long offset, max_lag;
    if (get_int(clock, s_offset_ns, &offset) < 0 || add_one(clock, s_reads) < 0)
        return -1;
    long long lag = read_ns + offset - kernel;
    if (0 < lag && lag < max_stamp_age_ns) {
        *now = read_ns - lag;
        if (lag > late_read_ns) {
            if (add_one(clock, s_late_reads) < 0 || get_int(clock, s_max_read_lag_ns, &max_lag) < 0)
                return -1;
            if (lag > max_lag && set_int(clock, s_max_read_lag_ns, lag) < 0)
                return -1;
        }
    }
    else if (lag < -unbelieved_ahead_ns || lag >= max_stamp_age_ns) {
        if (add_one(clock, s_unbelieved) < 0)
            return -1;
    }
    return 0;
}

static inline int
hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Append the whole chunks at the start of b[0:n]; return where they end, or -1 on an error set. */
static Py_ssize_t
take_whole_chunks(const char *b, Py_ssize_t n, PyObject *now, PyObject *times, PyObject *datas)
{
    Py_ssize_t pos = 0;
    while (pos < n) {
        Py_ssize_t i = pos;
        unsigned long long size = 0;
        int digit;
        while (i < n && i - pos < 16 && (digit = hex_digit((unsigned char)b[i])) >= 0) {
            size = size * 16 + (unsigned long long)digit;
            i++;
        }
        Py_ssize_t digits = i - pos;
        if (digits == 0 || digits >= 16 || size == 0 || n - i < 2 || b[i] != '\r' || b[i + 1] != '\n')
            return pos;
        Py_ssize_t start = i + 2;
        if ((unsigned long long)(n - start) < size + 2)
            return pos;
        Py_ssize_t stop = start + (Py_ssize_t)size;
        if (b[stop] != '\r' || b[stop + 1] != '\n')
            return pos;
        PyObject *piece = PyBytes_FromStringAndSize(b + start, (Py_ssize_t)size);
        if (piece == NULL)
            return -1;
        int failed = PyList_Append(datas, piece);
        Py_DECREF(piece);
        if (failed || PyList_Append(times, now))
            return -1;
        pos = stop + 2;
    }
    return pos;
}

static PyObject *
stamped_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "read(fd, buffer, clock, times, datas, at_chunk) takes 6 arguments");
        return NULL;
    }
    if (late_read_ns < 0) {
        PyErr_SetString(PyExc_RuntimeError, "bench.clients._stamped.configure() was not called");
        return NULL;
    }
    long fd_long = PyLong_AsLong(args[0]);
    if (fd_long == -1 && PyErr_Occurred())
        return NULL;
    if (fd_long < 0 || fd_long > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "read(): %ld is not a file descriptor", fd_long);
        return NULL;
    }
    int fd = (int)fd_long;
    PyObject *clock = args[2], *times = args[3], *datas = args[4];
    if (!PyList_CheckExact(times) || !PyList_CheckExact(datas)) {
        PyErr_SetString(PyExc_TypeError, "read(): times and datas must be lists");
        return NULL;
    }
    int at_chunk = PyObject_IsTrue(args[5]);
    if (at_chunk < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0)
        return NULL;

    union {
        char bytes[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {view.buf, (size_t)view.len};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof(control.bytes);
    ssize_t n = recvmsg(fd, &msg, 0);
    if (n < 0) {
        PyBuffer_Release(&view);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    struct timespec mono;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    long long read_ns = (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec;
    long long now_ns = read_ns;
    if (n > 0 && clock != Py_None) {
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        if (cmsg != NULL && cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_TIMESTAMPNS
            && cmsg->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
            struct timespec kernel;
            memcpy(&kernel, CMSG_DATA(cmsg), sizeof(kernel));
            if (arrival(clock, read_ns, (long long)kernel.tv_sec * 1000000000LL + kernel.tv_nsec, &now_ns) < 0) {
                PyBuffer_Release(&view);
                return NULL;
            }
        }
    }
    PyObject *now = PyLong_FromLongLong(now_ns);
    if (now == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t taken = 0;
    if (at_chunk && n > 0) {
        taken = take_whole_chunks(view.buf, n, now, times, datas);
        if (taken < 0) {
            Py_DECREF(now);
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    PyObject *result;
    if (n > 0 && taken == n) {
        result = Py_NewRef(Py_None);
    }
    else {
        PyObject *rest = PyBytes_FromStringAndSize((const char *)view.buf + taken, n - taken);
        result = rest == NULL ? NULL : PyTuple_Pack(2, rest, now);
        Py_XDECREF(rest);
    }
    Py_DECREF(now);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
configure(PyObject *module, PyObject *args)
{
    long long late, max_age, ahead;
    if (!PyArg_ParseTuple(args, "LLL", &late, &max_age, &ahead))
        return NULL;
    if (late < 0 || max_age <= 0 || ahead < 0) {
        PyErr_SetString(PyExc_ValueError, "configure(): the bounds are durations in ns (max_stamp_age_ns > 0)");
        return NULL;
    }
    late_read_ns = late, max_stamp_age_ns = max_age, unbelieved_ahead_ns = ahead;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))stamped_read, METH_FASTCALL,
     "read(fd, buffer, clock, times, datas, at_chunk) -> None | (rest, arrival_ns): one timed read (see the module)"},
    {"configure", configure, METH_VARARGS,
     "configure(late_read_ns, max_stamp_age_ns, unbelieved_ahead_ns): the bounds bench.clients.http uses"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "bench.clients._stamped", "One timed read of a TCP socket (see bench/clients/_stamped.c).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__stamped(void)
{
    s_offset_ns = PyUnicode_InternFromString("offset_ns");
    s_reads = PyUnicode_InternFromString("reads");
    s_late_reads = PyUnicode_InternFromString("late_reads");
    s_max_read_lag_ns = PyUnicode_InternFromString("max_read_lag_ns");
    s_unbelieved = PyUnicode_InternFromString("unbelieved");
    if (!s_offset_ns || !s_reads || !s_late_reads || !s_max_read_lag_ns || !s_unbelieved)
        return NULL;
    return PyModule_Create(&module_def);
}
