#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: underlay maintainers
# Apache-2.0 (see the repository's LICENSE)
"""Ansible module: converge a host with the underlay agent.

A thin wrapper by design: every decision (what differs, what to change, what
is ours, whether the host is ready, when to roll back) is the agent's. The
module maps the agent's one JSON document (agent/schema/output.schema.json)
onto Ansible's conventions: check mode, --diff, changed, failed/msg.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: converge
short_description: Converge a host into a layer-3 ECMP Kubernetes node with underlay
version_added: "0.1.0"
description:
  - Runs the C(underlay) agent on the target host. A real run is
    C(underlay apply --json); check mode is C(underlay plan --json), which
    changes nothing.
  - The agent validates the profile and host facts before its first change;
    a bad profile fails the task with the file, line and column of every
    problem, and nothing on the host is changed.
  - With I(safe=true) the agent records what it owns before the change,
    applies, and waits up to I(confirm_timeout) seconds for its readiness
    gates (uplinks up, BGP Established on every ToR, ECMP paths, service IP
    exported) and the optional I(probe). If they do not pass, it rolls back
    exactly its own objects to the recorded state and the task fails with
    C(rolled_back=true) and the failing gate's evidence. A host a bad profile
    would take off the fabric stays reachable for the next run.
  - Secrets (join tokens, BGP passwords) never appear in the return values;
    BGP passwords stay in their C(password_file) on the host.
options:
  profile:
    description:
      - The role profile (TOML) on the target host, shared by every host of
        the role. Default on the agent's side is C(<root>/etc/underlay/profile.toml).
      - An C(https://) URL is passed through to the agent, which fetches it
        over HTTPS pinned by I(profile_sha256), keeping the last good copy in
        its cache.
    type: str
  profile_sha256:
    description:
      - The sha256 (hex, as C(sha256sum) prints it) the I(profile) must have;
        required for a URL. Passed as C(--profile-sha256).
    type: str
  host:
    description:
      - Host facts (TOML) on the target host, with the names, addresses and ASNs of
        this host. Default on the agent's side is C(<root>/etc/underlay/host.toml).
      - An C(https://) URL works like I(profile), pinned by I(host_sha256).
    type: str
    aliases: [host_facts]
  host_sha256:
    description:
      - The sha256 (hex) the I(host) facts must have; required for a URL.
        Passed as C(--host-sha256).
    type: str
  ca_file:
    description:
      - Trust only the CA certificates in this PEM bundle (on the target) for
        C(https://) sources, a private provisioning CA. Passed as C(--ca-file).
    type: path
  wait:
    description:
      - After converging, wait for the readiness gates (C(apply --wait)); the
        task fails when one does not pass within I(wait_timeout).
      - Ignored when I(safe=true), which always waits (and rolls back).
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait for the gates. Default is the profile's
        C(bgp.readiness.timeout_s), else 60.
    type: int
  join:
    description:
      - After the host converged and every readiness gate passed, join the
        Kubernetes cluster (C(apply --wait --join)), with the host facts'
        C([join]) section. A joined node is never joined again; a safe apply
        that rolled back never joins.
    type: bool
    default: false
  kubeadm:
    description:
      - The kubeadm executable for I(join) (C(--kubeadm)). Default is the
        agent's (C(kubeadm) in C(PATH)).
    type: path
  join_token:
    description:
      - The kubeadm bootstrap token. The module writes it (mode 0600, only
        when it differs, never in check mode) to I(join_token_file) below
        I(root), where the host facts' C(join.token_file) points; the agent
        reads it from there. Never on a command line, never returned.
    type: str
  join_token_file:
    description:
      - Where I(join_token) goes, the host facts' C(join.token_file)
        (an absolute path, taken below I(root)).
    type: path
  safe:
    description:
      - Safe apply (C(apply --confirm)) - roll back to the recorded pre-apply
        state when the readiness gates (and I(probe)) do not pass within
        I(confirm_timeout) seconds. A crash inside that window leaves a
        checkpoint that the next run rolls back first.
    type: bool
    default: false
  confirm_timeout:
    description:
      - Seconds the gates (and I(probe)) have to pass in a safe apply.
    type: int
    default: 60
  probe:
    description:
      - With I(safe=true), also require a TCP connection to this
        C(ADDRESS:PORT) through the fabric (for example the API server)
        before the change is kept. IPv6 as C([ADDRESS]:PORT).
    type: str
  netns:
    description:
      - Run inside this network namespace (C(ip netns add NAME)); for tests
        and labs.
    type: str
  root:
    description:
      - Prefix for every file the agent reads or writes (C(/etc), C(/var/lib));
        for tests and labs.
    type: path
    default: /
  binary:
    description:
      - Path of the C(underlay) binary on the target host. Default is
        C(underlay) in C(PATH) (also C(/usr/sbin), C(/usr/local/sbin)).
    type: path
notes:
  - Check mode is supported and changes nothing on the host.
  - Diff mode returns C(before)/C(after) text for every changed resource.
    The BIRD config shows as a line count and a hash, never its text (it may
    hold BGP passwords).
  - Runs as root on the target (C(become=true) unless you log in as root).
author:
  - underlay maintainers
"""

EXAMPLES = r"""
- name: Converge the fabric side of every node
  hosts: k8s_nodes
  become: true
  tasks:
    - name: Converge, keep the change only if BGP comes up (else roll back)
      underlay.fabric.converge:
        profile: /usr/share/underlay/profiles/l3-ecmp-calico.toml
        host: /etc/underlay/host.toml
        safe: true
        confirm_timeout: 60
        probe: 10.96.0.1:443

- name: What would change? (ansible-playbook site.yml --check --diff)
  underlay.fabric.converge:
    profile: /usr/share/underlay/profiles/l3-ecmp-calico.toml
    host: /etc/underlay/host.toml

- name: First boot from a pinned remote profile, then join the cluster
  underlay.fabric.converge:
    profile: https://config.example.net/profiles/l3-ecmp-calico.toml
    profile_sha256: 3f2a...e9
    host: /etc/underlay/host.toml        # [join] token_file = "/etc/underlay/join-token"
    wait: true
    join: true
    join_token: "{{ vault_kubeadm_token }}"
    join_token_file: /etc/underlay/join-token

- name: In a lab namespace with a scratch root (tests)
  underlay.fabric.converge:
    profile: /srv/lab/profile.toml
    host: /srv/lab/h1/host.toml
    netns: lab-h1
    root: /srv/lab/h1/root
    binary: /srv/lab/bin/underlay
"""

RETURN = r"""
changed:
  description: Whether the run changed the host (check mode - whether it would).
  returned: always
  type: bool
converged:
  description: Whether the host matches the profile after the run (null when the input was rejected).
  returned: always
  type: bool
rolled_back:
  description: >-
    The run rolled the host back to its pre-apply state - a safe apply whose
    gates did not pass in time, or a change the host refused part-way.
  returned: always
  type: bool
exit_code:
  description: >-
    The agent's exit code - 0 converged (plan - nothing to do), 1 error,
    2 plan - changes pending, 3 verification or a readiness gate failed,
    4 safe apply rolled back.
  returned: always
  type: int
summary:
  description: Resources by action.
  returned: always
  type: dict
  sample: {"ok": 12, "create": 9, "update": 3, "delete": 0}
resources:
  description: Every managed resource in plan order, with its action and before/after.
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "address", "id": "10.10.0.11/32 dev lo", "action": "create",
            "before": null, "after": "10.10.0.11/32 dev lo scope global"}]
remaining:
  description: After apply, what verification still found different.
  returned: always
  type: list
  elements: dict
diff:
  description: Ansible's diff, one before/after pair per changed resource (with --diff).
  returned: when diff mode is on and something changes
  type: list
  elements: dict
gates:
  description: The readiness gates with their evidence, when they ran (wait, safe).
  returned: when evaluated
  type: dict
rollback:
  description: >-
    A safe apply's rollback - the reason (the failing gates with their
    evidence), the checkpoint of a dead run it rolled back (pid), the ops
    applied, whether it completed.
  returned: when a safe apply rolled back
  type: dict
undone:
  description: One line per op a rollback undid (C(undone ...)) or could not (C(NOT undone ...)).
  returned: always
  type: list
  elements: str
durations_ms:
  description: Phase times of the agent (observe, plan, apply, verify, wait, total) in milliseconds.
  returned: always
  type: dict
failure:
  description: >-
    On failure, the kind (input - fix the profile or host facts, nothing changed;
    transient - retry may help; system - the host refused), the message, the
    resource and every located input problem (file, key, line, column).
  returned: on failure
  type: dict
cmd:
  description: The agent's command line (it never holds a secret).
  returned: always
  type: list
  elements: str
"""

import json
import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

# Exit codes of the agent (README "Exit codes").
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PENDING = 2
EXIT_NOT_READY = 3
EXIT_ROLLED_BACK = 4


def build_command(binary, params, check_mode):
    """The agent's argv. Never holds a secret (the join token goes in its file)."""
    cmd = [binary, "plan" if check_mode else "apply", "--json"]
    for opt, flag in (
        ("profile", "--profile"),
        ("profile_sha256", "--profile-sha256"),
        ("host", "--host"),
        ("host_sha256", "--host-sha256"),
        ("ca_file", "--ca-file"),
        ("netns", "--netns"),
    ):
        if params.get(opt):
            cmd += [flag, str(params[opt])]
    cmd += ["--root", params["root"] or "/"]
    if check_mode:
        return cmd
    if params["safe"]:
        cmd += ["--confirm", str(params["confirm_timeout"])]
        if params.get("probe"):
            cmd += ["--probe", params["probe"]]
        if params["join"]:
            # --join requires --wait; --confirm already waits (its own timeout).
            cmd.append("--wait")
    elif params["wait"] or params["join"]:
        cmd.append("--wait")
        if params.get("wait_timeout") is not None:
            cmd += ["--wait-timeout", str(params["wait_timeout"])]
    if params["join"]:
        cmd.append("--join")
        if params.get("kubeadm"):
            cmd += ["--kubeadm", params["kubeadm"]]
    return cmd


def place_token(module, params):
    """Writes join_token to root + join_token_file (0600, atomically) when it
    differs; returns whether it changed (or would, in check mode)."""
    root = params["root"] or "/"
    path = os.path.join(root, params["join_token_file"].lstrip("/"))
    want = params["join_token"].strip() + "\n"
    try:
        with open(path) as f:
            if f.read() == want:
                return False
    except (IOError, OSError):
        pass
    if module.check_mode:
        return True
    directory = os.path.dirname(path)
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".underlay-token-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, want.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except (IOError, OSError) as e:
        module.fail_json(msg="cannot write join_token_file %s: %s" % (path, e), changed=False)
    return True


def ansible_diff(resources):
    """One before/after pair per changed resource, in Ansible's diff format."""
    out = []
    for r in resources:
        if r.get("action") == "ok":
            continue
        name = "%s %s" % (r.get("kind"), r.get("id"))

        def text(v):
            return "" if v is None else (v if v.endswith("\n") else v + "\n")

        out.append(
            {
                "before_header": "%s (%s)" % (name, "absent" if r.get("before") is None else "before"),
                "after_header": "%s (%s)" % (name, r.get("action")),
                "before": text(r.get("before")),
                "after": text(r.get("after")),
            }
        )
    return out


def failure_msg(doc):
    """The document's one-line msg, plus every located problem after the first."""
    msg = doc.get("msg") or "underlay failed"
    failure = doc.get("failure") or {}
    problems = failure.get("problems") or []
    extra = [
        "%s:%s:%s: %s: %s" % (p["file"], p["line"], p["column"], p["key"], p["message"])
        for p in problems[1:]
    ]
    return "; ".join([msg] + extra)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            profile=dict(type="str"),
            profile_sha256=dict(type="str"),
            host=dict(type="str", aliases=["host_facts"]),
            host_sha256=dict(type="str"),
            ca_file=dict(type="path"),
            wait=dict(type="bool", default=False),
            wait_timeout=dict(type="int"),
            join=dict(type="bool", default=False),
            kubeadm=dict(type="path"),
            join_token=dict(type="str", no_log=True),
            join_token_file=dict(type="path"),
            safe=dict(type="bool", default=False),
            confirm_timeout=dict(type="int", default=60),
            probe=dict(type="str"),
            netns=dict(type="str"),
            root=dict(type="path", default="/"),
            binary=dict(type="path"),
        ),
        required_together=[("join_token", "join_token_file")],
        supports_check_mode=True,
    )
    p = module.params
    if p["probe"] and not p["safe"]:
        module.fail_json(msg="probe needs safe=true: the probe decides whether a safe apply is kept")
    if p["confirm_timeout"] < 1:
        module.fail_json(msg="confirm_timeout must be at least 1 second (got %d)" % p["confirm_timeout"])
    binary = p["binary"] or module.get_bin_path(
        "underlay", required=True, opt_dirs=["/usr/sbin", "/usr/local/sbin"]
    )
    cmd = build_command(binary, p, module.check_mode)
    token_changed = bool(p["join_token"]) and place_token(module, p)

    started = time.monotonic()
    rc, stdout, stderr = module.run_command(cmd)
    module_ms = round((time.monotonic() - started) * 1000.0, 3)

    try:
        doc = json.loads(stdout)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        # No document: the agent could not even parse its flags (an agent too
        # old for an option), or died. Its stderr says why.
        module.fail_json(
            msg="underlay printed no JSON document (exit %s): %s"
            % (rc, (stderr or stdout).strip() or "no output"),
            rc=rc,
            cmd=cmd,
            stderr=stderr,
            changed=False,
            rolled_back=False,
        )

    resources = doc.get("resources") or []
    result = dict(
        changed=bool(doc.get("changed")) or token_changed,
        converged=doc.get("converged"),
        # A safe apply's rollback, or the undo of a change the host refused
        # part-way (the document lists each op undone in rolled_back).
        rolled_back=doc.get("rollback") is not None or bool(doc.get("rolled_back")),
        undone=doc.get("rolled_back") or [],
        exit_code=doc.get("exit_code", rc),
        summary=doc.get("summary"),
        resources=resources,
        remaining=doc.get("remaining") or [],
        durations_ms=dict(doc.get("durations_ms") or {}, module_wall=module_ms),
        cmd=cmd,
        underlay_host=doc.get("host"),
    )
    if doc.get("gates") is not None:
        result["gates"] = doc["gates"]
    if doc.get("rollback") is not None:
        result["rollback"] = doc["rollback"]
    if module._diff:
        d = ansible_diff(resources)
        if d:
            result["diff"] = d

    if module.check_mode and rc in (EXIT_OK, EXIT_PENDING) and not doc.get("failed"):
        # Plan: changed means "apply would change something".
        result["changed"] = rc == EXIT_PENDING or token_changed
        result["msg"] = doc.get("msg") or ""
        module.exit_json(**result)
    if rc == EXIT_OK and not doc.get("failed"):
        result["msg"] = doc.get("msg") or ""
        module.exit_json(**result)
    # Ansible fails any result whose rc is not 0, so rc is returned only
    # here: plan's exit 2 (changes pending) is a success.
    result["failure"] = doc.get("failure")
    module.fail_json(msg=failure_msg(doc), rc=rc, **result)


if __name__ == "__main__":
    main()
