#!/usr/bin/env python3
"""The query API's OpenAPI document and its reference page, from one description.

    scripts/openapi.py          # writes crates/api/openapi.json and docs/api-reference.md
    scripts/openapi.py --check  # fails if either is not what this script writes (a test runs it)

The server serves crates/api/openapi.json as it is (include_str!); schemathesis checks the
running server against it (crates/cli/tests/console.rs). Edit the API here, not in the JSON.
"""
import json
import os
import sys
S=lambda **k: dict(type="string", **k)
NS=lambda **k: dict(type="string", nullable=True, **k)
I=lambda **k: dict(type="integer", **k)
B=dict(type="boolean")
ARR=lambda items: dict(type="array", items=items)
REF=lambda n: {"$ref": f"#/components/schemas/{n}"}
def obj(props, required=None, extra=False):
    o=dict(type="object", properties=props, required=required if required is not None else list(props), additionalProperties=extra)
    return o
def resp(desc, schema=None):
    r={"description": desc}
    if schema: r["content"]={"application/json":{"schema":schema}}
    return r
ERR=resp("What was wrong, naming the field or parameter.", REF("Error"))
def errs(*codes):
    d={}
    text={400:"Bad request: a parameter or body field is wrong (named in `error`).",401:"Not authenticated: no token or session, or a token without a role.",403:"Not allowed: the role is too low, or the CSRF header is missing on a session's change.",404:"Not found.",409:"Conflict.",503:"The state store cannot be read now; retry."}
    for c in codes: d[str(c)]=resp(text[c], REF("Error"))
    return d
def qp(name, desc, schema=None):
    return {"name":name,"in":"query","required":False,"description":desc,"schema":schema or S()}
TIME=S(format="date-time")
LIMIT=qp("limit","Items per page, 1 to 500 (default 50).",I(minimum=1,maximum=500))
CURSOR=qp("cursor","The `next` of the previous page.",S(pattern="^[0-9]{1,19}$"))
IMAGE_CURSOR=qp("cursor","The `next` of the previous page.",S(pattern="^-?[0-9]{1,18}~.+$"))
since=qp("since","From this time (RFC 3339), inclusive.",TIME)
until=qp("until","Until this time (RFC 3339), exclusive.",TIME)
scope=qp("scope","Novelty scope.",S(enum=["node","cluster","fleet"]))
schemas={
 "Error": obj({"error":S()}, extra=False),
 "Rule": obj({"id":S(),"name":S(),"version":I(),"severity":S(),"type":S(),"mitre_attack":ARR(S()),"analytic_story":ARR(S())}, ["id","name"], extra=True),
 "Workload": dict(obj({"kind":NS(),"name":S(),"derived":B}), nullable=True),
 "ImageRef": obj({"registry":NS(),"repository":NS(),"tag":NS(),"digest":NS(),"raw":S()}),
 "Suppressed": obj({"rule":S(),"reason":S()}),
 "Finding": obj({
   "schema_version":I(),"finding_id":S(),"rule":REF("Rule"),"mode":S(enum=["default","strict"]),"detected_at":TIME,
   "host":S(),"k8s.cluster.name":S(),"k8s.node.name":S(),"container.image.name":S(),"host.name":NS(),
   "first_seen":TIME,"last_seen":TIME,"count":I(minimum=0),"previous_seen":NS(format="date-time"),"late":B,
   "risk_object":S(),"risk_object_type":S(),"risk_score":I(),"risk_message":S(),"search_name":S(),
   "k8s.namespace.name":NS(),"k8s.pod.name":NS(),"k8s.pod.uid":NS(),"k8s.container.name":NS(),"container.id":NS(),
   "container.image.tag":NS(),"workload":REF("Workload"),"image":REF("ImageRef"),"scope":S(enum=["node","cluster","fleet"]),
   "registry_new":B,"look_alike":NS(),"incident_id":NS(),"suppressed":REF("Suppressed")},
   ["schema_version","finding_id","rule","mode","detected_at","host","k8s.cluster.name","k8s.node.name","container.image.name","first_seen","last_seen","count","previous_seen","late","risk_object","risk_object_type","risk_score","risk_message","search_name"]),
 "Workflow": obj({"status":S(enum=["new","acknowledged","resolved"]),"by":NS(),"at":NS(format="date-time"),"note":NS()}),
 "Incident": obj({
   "schema_version":I(),"incident_id":S(),"kind":S(enum=["image","new_node","digest","risk_threshold","capacity"]),
   "state":S(enum=["open","closed"]),"scope":S(enum=["node","cluster","fleet"]),"severity":S(),"title":S(),
   "cluster":NS(),"image":NS(),"node":NS(),"risk_object":S(),"opened_at":TIME,"closes_at":TIME,"closed_at":NS(format="date-time"),
   "detected_at":TIME,"risk_score":I(),"look_alike":NS(),"rule_id":S(),"finding_count":I(minimum=0),"findings":ARR(S()),
   "nodes":ARR(S()),"namespaces":ARR(S()),"workloads":ARR(S()),"images":ARR(S()),"workflow":REF("Workflow"),
   "node_count":I(minimum=0),"truncated":dict(type="boolean",description="In a list: the member lists are cut to 100 entries each (the incident's own page has them whole).")},
   ["schema_version","incident_id","kind","state","scope","severity","title","cluster","image","node","opened_at","closes_at","closed_at","detected_at","risk_score","look_alike","rule_id","finding_count","findings","nodes","namespaces","workloads","images","workflow","node_count"]),
 "AuditEntry": obj({"seq":I(minimum=1),"at":TIME,"actor":S(),"action":S(),"target":S(),"note":NS()}),
 "ImageRow": obj({"image":S(),"first_seen":TIME,"last_seen":TIME,"clusters":ARR(S()),"node_count":I(minimum=0),"nodes":ARR(S()),"namespaces":ARR(S()),"workloads":ARR(S()),"findings":I(minimum=0)}),
 "SuppressionRule": obj({"name":S(),"reason":S(),"author":NS(),"expires":NS(format="date-time"),"matchers":dict(type="object",additionalProperties={"oneOf":[S(),obj({"regex":S()})]}),"source":S(enum=["configured","api"]),"active":B}),
 "Session": obj({"name":S(),"role":S(enum=["viewer","responder","admin"]),"csrf":S()}),
}
def page(item): return obj({"items":ARR(REF(item)),"next":NS()})
for n in ["Finding","Incident","AuditEntry","ImageRow","SuppressionRule"]:
    schemas[n+"Page"]=page(n)
schemas["IncidentDetail"]=obj({"incident":REF("Incident"),"members":ARR(REF("Finding")),"audit":ARR(REF("AuditEntry"))})
schemas["WorkflowAnswer"]=obj({"workflow":REF("Workflow")})
schemas["ImageKnown"]=obj({"known":dict(type="boolean",enum=[True]),"image":REF("ImageRow"),"incidents":ARR(S())})
schemas["ImageUnknown"]=obj({"known":dict(type="boolean",enum=[False]),"image":S(),"error":S()})
schemas["Draft"]=obj({"name":NS(),"reason":S(),"expires":NS(),"matchers":dict(type="object",additionalProperties=S())})
schemas["Timeline"]=obj({"since":TIME,"until":TIME,"bucket_seconds":I(),
  "series":ARR(obj({"cluster":S(),"buckets":ARR(obj({"t":TIME,"findings":I(minimum=0)}))})),
  "points":ARR(obj({"t":TIME,"cluster":S(),"node":S(),"image":S(),"incident_id":NS(),"scope":NS(enum=["node","cluster","fleet",None]),"finding_id":S()})),
  "incidents":ARR(obj({"incident_id":S(),"kind":S(),"scope":S(),"title":S(),"opened_at":TIME,"closes_at":TIME,"closed_at":NS(format="date-time"),"node_count":I(minimum=0)}))})
FIELDS=["host","host.name","k8s.cluster.name","k8s.node.name","container.image.name","k8s.namespace.name","k8s.pod.name","k8s.container.name","container.image.tag","workload.kind","workload.name","image.registry","image.repository","image.tag","image.digest","image.raw","scope","look_alike","mode"]
schemas["NewRule"]=obj({"name":NS(minLength=1),"reason":S(minLength=1),"expires":NS(format="date-time"),
  "matchers":dict(type="object",minProperties=1,properties={f:{"oneOf":[S(),obj({"regex":S()})]} for f in FIELDS},additionalProperties=False)},["reason","matchers"])
schemas["Note"]=obj({"note":NS(maxLength=4096)},[])
schemas["Login"]=obj({"token":S(minLength=1)})
idp=lambda what: {"name":"id","in":"path","required":True,"description":what,"schema":S(minLength=1)}
sec=[{"bearerAuth":[]},{"cookieAuth":[]}]
paths={
 "/api/v1/openapi.json":{"get":{"operationId":"openapi","summary":"This document.","security":[],"responses":{"200":{"description":"The OpenAPI document.","content":{"application/json":{"schema":{"type":"object"}}}}}}},
 "/api/v1/session":{
   "get":{"operationId":"sessionGet","summary":"The console session of the cookie.","security":[{"cookieAuth":[]}],"responses":{"200":resp("The session.",REF("Session")),**errs(401)}},
   "post":{"operationId":"sessionOpen","summary":"Log in: a token with a role for an HttpOnly, SameSite=Strict session cookie (`unseen_session`) and a CSRF token.","security":[],
     "requestBody":{"required":True,"content":{"application/json":{"schema":REF("Login")}}},
     "responses":{"200":{"description":"Logged in; the cookie is set.","headers":{"Set-Cookie":{"schema":S(),"description":"`unseen_session=…; HttpOnly; SameSite=Strict; Path=/`"}},"content":{"application/json":{"schema":REF("Session")}}},**errs(400,401)}},
   "delete":{"operationId":"sessionClose","summary":"Log out (with the session: send X-CSRF-Token).","responses":{"204":{"description":"Logged out."},**errs(401,403)}}},
 "/api/v1/incidents":{"get":{"operationId":"listIncidents","summary":"Incidents, newest first (by when they opened), filtered.",
   "parameters":[qp("cluster","Cluster (an incident matches when it, or one of its members, is in it)."),qp("namespace","Namespace of a member."),qp("workload","Workload of a member: `Kind/name`, or the name."),qp("image","Substring of the image (case-insensitive)."),scope,qp("kind","Incident kind.",S(enum=["image","new_node","digest","risk_threshold","capacity"])),qp("state","The grouping window: open or closed.",S(enum=["open","closed"])),qp("status","The analyst workflow.",S(enum=["new","acknowledged","resolved"])),since,until,LIMIT,CURSOR],
   "responses":{"200":resp("A page of incidents.",REF("IncidentPage")),**errs(400,401,403,503)}}},
 "/api/v1/incidents/{id}":{"get":{"operationId":"getIncident","summary":"One incident with every member finding and its audit entries.","parameters":[idp("incident_id")],
   "responses":{"200":resp("The incident.",REF("IncidentDetail")),**errs(401,403,404,503)}}},
}
for act,desc in [("ack","Acknowledge"),("resolve","Resolve")]:
    paths[f"/api/v1/incidents/{{id}}/{act}"]={"post":{"operationId":f"{act}Incident","summary":f"{desc} an incident, with an optional note (role responder; audited).","parameters":[idp("incident_id")],
      "requestBody":{"required":False,"content":{"application/json":{"schema":REF("Note")}}},
      "responses":{"200":resp("The incident's workflow now.",REF("WorkflowAnswer")),**errs(400,401,403,404,503)}}}
paths["/api/v1/findings"]={"get":{"operationId":"listFindings","summary":"Findings, newest first, filtered; the items are the findings file's objects.",
   "parameters":[qp("cluster","Cluster, exactly."),qp("node","Node, exactly."),qp("namespace","Namespace, exactly."),qp("workload","`Kind/name`, or the name."),qp("image","Substring of the image (case-insensitive)."),scope,qp("suppressed","Suppressed or not.",S(enum=["true","false"])),qp("incident","incident_id."),since,until,LIMIT,CURSOR],
   "responses":{"200":resp("A page of findings.",REF("FindingPage")),**errs(400,401,403,503)}}}
paths["/api/v1/findings/{id}"]={"get":{"operationId":"getFinding","summary":"One finding.","parameters":[idp("finding_id")],"responses":{"200":resp("The finding.",REF("Finding")),**errs(401,403,404,503)}}}
paths["/api/v1/findings/{id}/suppression"]={"get":{"operationId":"draftSuppression","summary":"A suppression rule prefilled from a finding (\"suppress like this\").","parameters":[idp("finding_id")],"responses":{"200":resp("The draft.",REF("Draft")),**errs(401,403,404,503)}}}
paths["/api/v1/images"]={"get":{"operationId":"listImages","summary":"The image inventory, newest first by first seen.","parameters":[qp("q","Substring of the image (case-insensitive)."),qp("cluster","Only images seen in this cluster."),LIMIT,IMAGE_CURSOR],"responses":{"200":resp("A page of images.",REF("ImageRowPage")),**errs(400,401,403,503)}}}
paths["/api/v1/images/{reference}"]={"get":{"operationId":"getImage","summary":"Is this image known, where, since when. The reference may hold `/`; `nginx` finds `docker.io/library/nginx`.",
  "parameters":[{"name":"reference","in":"path","required":True,"description":"An image reference.","schema":S(minLength=1)}],
  "responses":{"200":resp("Known.",REF("ImageKnown")),"404":resp("Not known.",REF("ImageUnknown")),**errs(401,403,503)}}}
paths["/api/v1/timeline"]={"get":{"operationId":"timeline","summary":"First sightings per hour per cluster, the findings as points, the incidents opened (default: the 24 h before the newest finding).","parameters":[since,until,qp("cluster","Only this cluster.")],"responses":{"200":resp("The timeline.",REF("Timeline")),**errs(400,401,403,503)}}}
paths["/api/v1/suppressions"]={
  "get":{"operationId":"listSuppressions","summary":"The suppression rules: configured (config and rules file) and made through the API.","parameters":[LIMIT,CURSOR],"responses":{"200":resp("Every rule.",REF("SuppressionRulePage")),**errs(400,401,403,503)}},
  "post":{"operationId":"createSuppression","summary":"Create a suppression rule (role responder; audited); it applies from the next commit.","requestBody":{"required":True,"content":{"application/json":{"schema":REF("NewRule")}}},
    "responses":{"201":resp("Created.",REF("SuppressionRule")),**errs(400,401,403,409,503)}}}
paths["/api/v1/suppressions/{name}/expire"]={"post":{"operationId":"expireSuppression","summary":"Expire a rule made through the API, now (role admin; audited).","parameters":[{"name":"name","in":"path","required":True,"description":"The rule's name.","schema":S(minLength=1)}],
  "responses":{"200":resp("The rule, expired.",REF("SuppressionRule")),**errs(401,403,404,409,503)}}}
paths["/api/v1/audit"]={"get":{"operationId":"audit","summary":"The audit log, newest first (role admin).","parameters":[LIMIT,CURSOR],"responses":{"200":resp("A page of audit entries.",REF("AuditEntryPage")),**errs(400,401,403,503)}}}
doc={"openapi":"3.0.3","info":{"title":"unseen query API","version":"1","description":"Incidents, findings, the image inventory and its timeline, and the analyst workflow of `unseen serve` (`--api`, default 127.0.0.1:9465). Authenticate with a bearer token of the tokens file that has a `role` (viewer, responder, admin), or with the console's session cookie (state changes then need the `X-CSRF-Token` header). Lists answer `{\"items\": [...], \"next\": cursor or null}`, newest first."},
 "servers":[{"url":"/"}],"security":sec,"paths":paths,
 "components":{"securitySchemes":{"bearerAuth":{"type":"http","scheme":"bearer","description":"A token of the tokens file with a `role`."},"cookieAuth":{"type":"apiKey","in":"cookie","name":"unseen_session","description":"The console's session (POST /api/v1/session)."}},"schemas":schemas}}


def md_schema(schema):
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    t = schema.get("type", "object")
    if t == "array":
        return "array of " + md_schema(schema["items"])
    if "enum" in schema:
        t = " \\| ".join(f"`{v}`" for v in schema["enum"] if v is not None)
    if "format" in schema:
        t += f" ({schema['format']})"
    if "pattern" in schema:
        t += f", pattern `{schema['pattern']}`"
    if "minimum" in schema or "maximum" in schema:
        t += f", {schema.get('minimum', '')}…{schema.get('maximum', '')}"
    if schema.get("nullable"):
        t += " or null"
    return t


def reference(doc):
    out = ["# Query API reference", "",
           "Generated from [`crates/api/openapi.json`](../crates/api/openapi.json) by `scripts/openapi.py`;",
           "do not edit by hand. The guide is [api.md](api.md).", "",
           doc["info"]["description"], ""]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            out.append(f"## `{method.upper()} {path}`")
            out.append("")
            out.append(op["summary"])
            out.append("")
            sec = op.get("security", doc["security"])
            out.append("Authentication: " + ("none" if sec == [] else ", or ".join(next(iter(s)) for s in sec)) + ".")
            out.append("")
            params = op.get("parameters", [])
            if params:
                out += ["| parameter | in | type | meaning |", "| --- | --- | --- | --- |"]
                for p in params:
                    out.append(f"| `{p['name']}` | {p['in']} | {md_schema(p['schema'])} | {p['description']} |")
                out.append("")
            body = op.get("requestBody")
            if body:
                out.append("Body: " + md_schema(body["content"]["application/json"]["schema"]) + ".")
                out.append("")
            out += ["| status | meaning | body |", "| --- | --- | --- |"]
            for code, r in op["responses"].items():
                schema = r.get("content", {}).get("application/json", {}).get("schema")
                out.append(f"| {code} | {r['description']} | {md_schema(schema) if schema else ''} |")
            out.append("")
    out += ["# Schemas", ""]
    for name, schema in doc["components"]["schemas"].items():
        out.append(f"## {name}")
        out.append("")
        props = schema.get("properties")
        if props is None:
            out.append(md_schema(schema))
            out.append("")
            continue
        required = set(schema.get("required", []))
        out += ["| field | type | required |", "| --- | --- | --- |"]
        for field, fs in props.items():
            out.append(f"| `{field}` | {md_schema(fs)} | {'yes' if field in required else 'no'} |")
        out.append("")
    return "\n".join(out)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outputs = {
        os.path.join(root, "crates", "api", "openapi.json"): json.dumps(doc, indent=2) + "\n",
        os.path.join(root, "docs", "api-reference.md"): reference(doc),
    }
    stale = []
    for path, text in outputs.items():
        if "--check" in sys.argv[1:]:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(path)
            except FileNotFoundError:
                stale.append(path)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        rel = ", ".join(os.path.relpath(p, root) for p in stale)
        sys.exit(f"{rel}: not what scripts/openapi.py writes; run scripts/openapi.py and commit the result")


if __name__ == "__main__":
    main()
