/* The decode of a finished stream, in C: the usual case of bench.clients.http.split_sse and of
bench.clients.openai.OpenAIDialect.read, without the interpreter's work per event.

split(times, datas) -> list | None
    split_sse's quick path: where every body piece is one whole event of one "data: " line
    ("data: X\n\n", no other newline, no carriage return anywhere), the list of (time, X); else None,
    and split_sse takes the general path, which says what is unusual.

openai_prefix(events, loads, chat) -> (count, times, pieces)
    The leading run of OpenAIDialect.read's usual events: payloads that `loads` (orjson.loads) makes a
    dict with no truthy "error", "usage" or "timings", whose "choices" (absent, None or a list) hold only
    dicts with no truthy "finish_reason" and text in "text" (chat false) or in "delta"."content" (chat
    true; a delta with no reasoning and no tool calls). count is how many events that run holds; times
    the arrival time of each that carried text, pieces that text. The first event that is anything else
    (a finish reason, a usage, [DONE], a payload that is not a JSON object, a value of an unusual type)
    ends the run: OpenAIDialect.read reads it and the rest in Python, so this takes only what the
    Python loop would take in the very same way. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

static PyObject *s_error, *s_usage, *s_timings, *s_choices, *s_finish_reason, *s_text, *s_delta, *s_content,
    *s_reasoning_content, *s_reasoning, *s_tool_calls;

static PyObject *
sse_split(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "split(times, datas) takes 2 arguments");
        return NULL;
    }
    PyObject *times = args[0], *datas = args[1];
    if (!PyList_CheckExact(times) || !PyList_CheckExact(datas))
        Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(datas);
    if (n == 0 || PyList_GET_SIZE(times) != n)
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *data = PyList_GET_ITEM(datas, i);
        if (!PyBytes_CheckExact(data))
            Py_RETURN_NONE;
        const char *b = PyBytes_AS_STRING(data);
        Py_ssize_t len = PyBytes_GET_SIZE(data);
        if (len < 8 || memcmp(b, "data: ", 6) != 0 || b[len - 2] != '\n' || b[len - 1] != '\n')
            Py_RETURN_NONE;
        if (memchr(b, '\r', (size_t)len) != NULL || memchr(b, '\n', (size_t)(len - 2)) != NULL)
            Py_RETURN_NONE;
    }
    PyObject *events = PyList_New(n);
    if (events == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *data = PyList_GET_ITEM(datas, i);
        PyObject *payload = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + 6, PyBytes_GET_SIZE(data) - 8);
        if (payload == NULL) {
            Py_DECREF(events);
            return NULL;
        }
        PyObject *event = PyTuple_Pack(2, PyList_GET_ITEM(times, i), payload);
        Py_DECREF(payload);
        if (event == NULL) {
            Py_DECREF(events);
            return NULL;
        }
        PyList_SET_ITEM(events, i, event);
    }
    return events;
}

/* 1 where obj[name] is present and truthy, 0 where not, -1 with an error set */
static int
truthy_item(PyObject *obj, PyObject *name)
{
    PyObject *value = PyDict_GetItemWithError(obj, name); /* borrowed */
    if (value == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return PyObject_IsTrue(value);
}

enum { USUAL_NO_TEXT = 0, USUAL_TEXT = 1, UNUSUAL = 2, FAILED = -1 };

/* The text of one usual choice (a borrowed reference in *text, or NULL where it carries none), or UNUSUAL. */
static int
usual_choice(PyObject *choice, int chat, PyObject **text)
{
    *text = NULL;
    if (!PyDict_CheckExact(choice))
        return UNUSUAL;
    int flag = truthy_item(choice, s_finish_reason);
    if (flag != 0)
        return flag < 0 ? FAILED : UNUSUAL;
    PyObject *holder = choice;
    PyObject *key = s_text;
    if (chat) {
        holder = PyDict_GetItemWithError(choice, s_delta);
        if (holder == NULL)
            return PyErr_Occurred() ? FAILED : USUAL_NO_TEXT;
        if (holder == Py_None)
            return USUAL_NO_TEXT;
        if (!PyDict_CheckExact(holder))
            return UNUSUAL;
        PyObject *unusual[] = {s_reasoning_content, s_reasoning, s_tool_calls};
        for (size_t i = 0; i < sizeof(unusual) / sizeof(unusual[0]); i++) {
            flag = truthy_item(holder, unusual[i]);
            if (flag != 0)
                return flag < 0 ? FAILED : UNUSUAL;
        }
        key = s_content;
    }
    PyObject *value = PyDict_GetItemWithError(holder, key);
    if (value == NULL)
        return PyErr_Occurred() ? FAILED : USUAL_NO_TEXT;
    if (value == Py_None)
        return USUAL_NO_TEXT;
    if (!PyUnicode_CheckExact(value))
        return UNUSUAL;
    if (PyUnicode_GET_LENGTH(value) == 0)
        return USUAL_NO_TEXT;
    *text = value;
    return USUAL_TEXT;
}

/* One event's payload: appends its texts to pieces; returns whether it carried text, or UNUSUAL, or FAILED. */
static int
usual_event(PyObject *payload, PyObject *loads, int chat, PyObject *pieces)
{
    if (!PyBytes_CheckExact(payload))
        return UNUSUAL;
    const char *b = PyBytes_AS_STRING(payload);
    Py_ssize_t len = PyBytes_GET_SIZE(payload), i = 0;
    while (i < len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n'))
        i++;
    if (i == len || b[i] != '{') /* [DONE], or not an object: the Python loop says which */
        return UNUSUAL;
    PyObject *chunk = PyObject_CallOneArg(loads, payload);
    if (chunk == NULL) { /* malformed: the Python loop parses it again and reports it */
        PyErr_Clear();
        return UNUSUAL;
    }
    int result = UNUSUAL;
    if (!PyDict_CheckExact(chunk))
        goto done;
    PyObject *unusual[] = {s_error, s_usage, s_timings};
    for (size_t k = 0; k < sizeof(unusual) / sizeof(unusual[0]); k++) {
        int flag = truthy_item(chunk, unusual[k]);
        if (flag != 0) {
            result = flag < 0 ? FAILED : UNUSUAL;
            goto done;
        }
    }
    PyObject *choices = PyDict_GetItemWithError(chunk, s_choices);
    if (choices == NULL) {
        result = PyErr_Occurred() ? FAILED : USUAL_NO_TEXT;
        goto done;
    }
    if (choices == Py_None) {
        result = USUAL_NO_TEXT;
        goto done;
    }
    if (!PyList_CheckExact(choices))
        goto done;
    Py_ssize_t n = PyList_GET_SIZE(choices), start = PyList_GET_SIZE(pieces);
    result = USUAL_NO_TEXT;
    for (Py_ssize_t c = 0; c < n; c++) {
        PyObject *text;
        int kind = usual_choice(PyList_GET_ITEM(choices, c), chat, &text);
        if (kind == UNUSUAL || kind == FAILED) {
            result = kind;
            break;
        }
        if (kind == USUAL_TEXT) {
            if (PyList_Append(pieces, text) < 0) {
                result = FAILED;
                break;
            }
            result = USUAL_TEXT;
        }
    }
    if ((result == UNUSUAL || result == FAILED) && PyList_SetSlice(pieces, start, PyList_GET_SIZE(pieces), NULL) < 0)
        result = FAILED; /* the event is left whole to the Python loop: none of its texts kept here */
done:
    Py_DECREF(chunk);
    return result;
}

static PyObject *
sse_openai_prefix(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "openai_prefix(events, loads, chat) takes 3 arguments");
        return NULL;
    }
    PyObject *events = args[0], *loads = args[1];
    int chat = PyObject_IsTrue(args[2]);
    if (chat < 0)
        return NULL;
    PyObject *times = PyList_New(0), *pieces = PyList_New(0);
    if (times == NULL || pieces == NULL)
        goto failed;
    Py_ssize_t count = 0;
    if (PyList_CheckExact(events)) {
        for (Py_ssize_t n = PyList_GET_SIZE(events); count < n; count++) {
            PyObject *event = PyList_GET_ITEM(events, count);
            if (!PyTuple_CheckExact(event) || PyTuple_GET_SIZE(event) != 2)
                break;
            int kind = usual_event(PyTuple_GET_ITEM(event, 1), loads, chat, pieces);
            if (kind == FAILED)
                goto failed;
            if (kind == UNUSUAL)
                break;
            if (kind == USUAL_TEXT && PyList_Append(times, PyTuple_GET_ITEM(event, 0)) < 0)
                goto failed;
        }
    }
    PyObject *result = Py_BuildValue("(nNN)", count, times, pieces);
    return result;
failed:
    Py_XDECREF(times);
    Py_XDECREF(pieces);
    return NULL;
}

static PyMethodDef methods[] = {
    {"split", (PyCFunction)(void (*)(void))sse_split, METH_FASTCALL,
     "split(times, datas) -> list[(time, payload)] | None: split_sse's quick path (see the module)"},
    {"openai_prefix", (PyCFunction)(void (*)(void))sse_openai_prefix, METH_FASTCALL,
     "openai_prefix(events, loads, chat) -> (count, times, pieces): the leading usual events (see the module)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "bench.clients._sse", "A finished stream's usual decode (see bench/clients/_sse.c).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__sse(void)
{
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&s_error, "error"},
        {&s_usage, "usage"},
        {&s_timings, "timings"},
        {&s_choices, "choices"},
        {&s_finish_reason, "finish_reason"},
        {&s_text, "text"},
        {&s_delta, "delta"},
        {&s_content, "content"},
        {&s_reasoning_content, "reasoning_content"},
        {&s_reasoning, "reasoning"},
        {&s_tool_calls, "tool_calls"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].name);
        if (*names[i].slot == NULL)
            return NULL;
    }
    return PyModule_Create(&module_def);
}
