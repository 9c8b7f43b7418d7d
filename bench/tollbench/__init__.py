"""The gateway benchmark behind ``bench/run``.

Four things run on this machine at once, each in its own process:

    provider      Envoy answering every JSON call with a fixed chat completion
                  (direct_response), plus ``sse_provider`` for streams
    floor         Envoy routing straight to the provider, no ext_proc
    noop          Envoy with ``noop_extproc``: the message pattern of Tollgate,
                  every answer empty (the cost of the protocol itself)
    full          Envoy with Tollgate enforcing a whole policy, Redis behind it

Modules:

    payloads      request and response bodies shared by every setup
    children      child processes, their CPU time and memory
    topology      starting the processes above and wiring the Envoys
    load          wrk runs (closed loop and paced) through a Lua script
    client        a tiny HTTP/1.1 client that times the first body byte
    probes        Redis and Envoy statistics before and after a run
    profiling     py-spy against the Tollgate process
    report        tables, targets and the machine-readable last line
    main          the command line of ``bench/run``
"""
