"""The report layer: what a run leaves in its output folder, and everything read back from it.

    result.schema.json   JSON Schema (draft 2020-12) of result.json
    schema               checks a parsed result.json against it (FedGCError: file, JSON path, problem)
    jsonable             plain JSON values and the file layout (`dumps`)
    records              the small typed records of result.json (server, metrics, data notes, TEP, ...)
    inspected            the typed view every consumer reads (`Inspected`), built from a checked dict
    ranking              the one ranking of the ordered pairs; edges re-decided at another alpha
    text                 numbers as text for tables
    table                the terminal table of `fedgc inspect`
    markdown (+ markdown_sections, streaming_markdown, tep_markdown)   report.md
    plots                the run's gc_heatmap.png and convergence.png (matplotlib loaded when drawing)
    result_json          the one writer (RunResult -> result.json, then the files above) and the one reader
    exports              edges.json, edges.csv, graph.graphml, graph.dot
    graph_figure, figures    the figures of `fedgc inspect --figures`

Each module imports only modules listed above it (tests/test_result_schema.py checks there is no cycle).
"""
