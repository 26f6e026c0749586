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
    Python loop would take in the very same way.

openai_pieces(times, datas, loads, chat) -> (count, times, pieces)
    The same, read straight from a body's timed pieces (bench.clients.http.Response: times, datas): the
    leading pieces that are each one whole event as split's quick path takes them and a usual event; count
    is how many pieces, and the first piece that is not ends the run. None of those events is made as a
    (time, payload) tuple, which the collector would have to visit: a stream of 256 tokens made 256.

    Most events of one stream differ only in their text: where an event parsed as usual carried one text
    and the payload holds no backslash, its bytes before and after that text (quoted, found exactly once)
    become a template. An event that is the template's bytes around a string holding no quote, backslash
    or control byte is the same JSON with another text, so its text is that string (checked as UTF-8) and
    no parse is needed; any other event is parsed and may become the next template. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

/* The bytes an event shares with the last templated one: bytes[:prefix] and bytes[len - suffix:]. */
typedef struct {
    PyObject *owner; /* the bytes object holding them (a strong reference), or NULL while there is none */
    const char *bytes;
    Py_ssize_t len, prefix, suffix;
} Template;

/* Whether a body piece is one whole event of one "data: " line ("data: X\n\n", no other newline, no
   carriage return anywhere); where it is, X's bytes in *payload and *len. */
static int
whole_event(PyObject *data, const char **payload, Py_ssize_t *len)
{
    if (!PyBytes_CheckExact(data))
        return 0;
    const char *b = PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    if (n < 8 || memcmp(b, "data: ", 6) != 0 || b[n - 2] != '\n' || b[n - 1] != '\n')
        return 0;
    if (memchr(b, '\r', (size_t)n) != NULL || memchr(b, '\n', (size_t)(n - 2)) != NULL)
        return 0;
    *payload = b + 6;
    *len = n - 8;
    return 1;
}

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
        const char *payload;
        Py_ssize_t len;
        if (!whole_event(PyList_GET_ITEM(datas, i), &payload, &len))
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
    if (chunk == NULL) { /* malformed (a ValueError): the Python loop parses it again and reports it */
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return FAILED; /* anything else (memory) is raised as it is */
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

/* The text of an event that matches the template (a new reference), or NULL (never an error set): no
   template, another shape, or a text that needs the parse (empty, escaped, not UTF-8). */
static PyObject *
templated_text(const Template *t, const char *b, Py_ssize_t len)
{
    if (t->owner == NULL || len < t->prefix + t->suffix || memcmp(b, t->bytes, (size_t)t->prefix) != 0 ||
        memcmp(b + len - t->suffix, t->bytes + t->len - t->suffix, (size_t)t->suffix) != 0)
        return NULL;
    const unsigned char *text = (const unsigned char *)b + t->prefix;
    Py_ssize_t n = len - t->prefix - t->suffix;
    if (n == 0)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (text[i] == '"' || text[i] == '\\' || text[i] < 0x20)
            return NULL; /* an escape, a quote (a different structure) or a byte JSON forbids: parsed */
    PyObject *value = PyUnicode_DecodeUTF8((const char *)text, n, NULL);
    if (value == NULL)
        PyErr_Clear(); /* not UTF-8: parsed, and the parse says what is wrong */
    return value;
}

/* After a parsed event that carried exactly one text: make its bytes the template where they allow. */
static void
set_template(Template *t, PyObject *owner, const char *b, Py_ssize_t len, PyObject *text)
{
    Py_CLEAR(t->owner);
    Py_ssize_t tn, found = -1;
    const char *tu = PyUnicode_AsUTF8AndSize(text, &tn);
    if (tu == NULL) {
        PyErr_Clear();
        return;
    }
    if (memchr(b, '\\', (size_t)len) != NULL) /* with no escape anywhere the text is written as it is */
        return;
    for (Py_ssize_t i = 0; i + tn + 2 <= len; i++) {
        if (b[i] == '"' && b[i + tn + 1] == '"' && memcmp(b + i + 1, tu, (size_t)tn) == 0) {
            if (found >= 0)
                return; /* twice: which one is the text is not known without the parse */
            found = i;
        }
    }
    if (found < 0)
        return;
    Py_INCREF(owner);
    *t = (Template){owner, b, len, found + 1, len - found - 1 - tn};
}

/* One event (its payload's bytes b[:len], held by owner, a bytes object): its text appended to pieces,
   read through the template where it matches, else parsed (and then perhaps the next template); returns
   USUAL_TEXT, USUAL_NO_TEXT, UNUSUAL or FAILED. */
static int
read_event(Template *t, PyObject *owner, const char *b, Py_ssize_t len, PyObject *loads, int chat, PyObject *pieces)
{
    PyObject *text = templated_text(t, b, len);
    if (text != NULL) {
        int kind = PyList_Append(pieces, text) < 0 ? FAILED : USUAL_TEXT;
        Py_DECREF(text);
        return kind;
    }
    PyObject *payload = PyBytes_GET_SIZE(owner) == len ? Py_NewRef(owner) : PyBytes_FromStringAndSize(b, len);
    if (payload == NULL)
        return FAILED;
    Py_ssize_t before = PyList_GET_SIZE(pieces);
    int kind = usual_event(payload, loads, chat, pieces);
    if (kind == USUAL_TEXT && PyList_GET_SIZE(pieces) == before + 1)
        set_template(t, owner, b, len, PyList_GET_ITEM(pieces, before));
    Py_DECREF(payload);
    return kind;
}

/* The leading usual events, as (count, times, pieces): of a list of events (time, payload) where
   piece_times is NULL, else of a body's pieces (piece_times, datas), each of which must be one whole event. */
static PyObject *
leading_usual(PyObject *items, PyObject *piece_times, PyObject *loads, int chat)
{
    Template template = {NULL, NULL, 0, 0, 0};
    PyObject *times = PyList_New(0), *pieces = PyList_New(0);
    if (times == NULL || pieces == NULL)
        goto failed;
    /* lengths that differ, or not lists: nothing taken here, and the general path says what is wrong */
    int usable = PyList_CheckExact(items) && (piece_times == NULL || (PyList_CheckExact(piece_times) &&
                                                                      PyList_GET_SIZE(piece_times) == PyList_GET_SIZE(items)));
    Py_ssize_t count = 0;
    /* each item and its time held while loads runs: a loads that changed the lists cannot free them under us */
    for (; usable && count < PyList_GET_SIZE(items) && (piece_times == NULL || count < PyList_GET_SIZE(piece_times));
         count++) {
        PyObject *item = Py_NewRef(PyList_GET_ITEM(items, count)), *owner, *time;
        const char *b;
        Py_ssize_t len;
        int kind = UNUSUAL;
        if (piece_times != NULL) {
            time = Py_NewRef(PyList_GET_ITEM(piece_times, count));
            owner = item;
            if (whole_event(item, &b, &len))
                kind = read_event(&template, owner, b, len, loads, chat, pieces);
        } else if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2 && PyBytes_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            time = Py_NewRef(PyTuple_GET_ITEM(item, 0));
            owner = PyTuple_GET_ITEM(item, 1);
            kind = read_event(&template, owner, PyBytes_AS_STRING(owner), PyBytes_GET_SIZE(owner), loads, chat, pieces);
        } else {
            time = NULL;
        }
        if (kind == USUAL_TEXT && PyList_Append(times, time) < 0)
            kind = FAILED;
        Py_DECREF(item);
        Py_XDECREF(time);
        if (kind == FAILED)
            goto failed;
        if (kind == UNUSUAL)
            break;
    }
    Py_XDECREF(template.owner);
    return Py_BuildValue("(nNN)", count, times, pieces);
failed:
    Py_XDECREF(template.owner);
    Py_XDECREF(times);
    Py_XDECREF(pieces);
    return NULL;
}

static PyObject *
sse_openai_prefix(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "openai_prefix(events, loads, chat) takes 3 arguments");
        return NULL;
    }
    int chat = PyObject_IsTrue(args[2]);
    return chat < 0 ? NULL : leading_usual(args[0], NULL, args[1], chat);
}

static PyObject *
sse_openai_pieces(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "openai_pieces(times, datas, loads, chat) takes 4 arguments");
        return NULL;
    }
    int chat = PyObject_IsTrue(args[3]);
    return chat < 0 ? NULL : leading_usual(args[1], args[0], args[2], chat);
}

static PyMethodDef methods[] = {
    {"split", (PyCFunction)(void (*)(void))sse_split, METH_FASTCALL,
     "split(times, datas) -> list[(time, payload)] | None: split_sse's quick path (see the module)"},
    {"openai_prefix", (PyCFunction)(void (*)(void))sse_openai_prefix, METH_FASTCALL,
     "openai_prefix(events, loads, chat) -> (count, times, pieces): the leading usual events (see the module)"},
    {"openai_pieces", (PyCFunction)(void (*)(void))sse_openai_pieces, METH_FASTCALL,
     "openai_pieces(times, datas, loads, chat) -> (count, times, pieces): the same, of a body's leading pieces"},
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
