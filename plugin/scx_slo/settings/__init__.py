"""scx-slo settings: the SLO configuration carried in the host container's user-data.

Modules: durations (parse "200ms"), model (validated dataclasses), validate
(TOML -> model, located errors), load (files and base64 user-data), render
(snippets for Bottlerocket, apiclient, launch templates, Karpenter, eksctl),
apiclient (the Bottlerocket API over /run/api.sock), store (last-good config).
"""
