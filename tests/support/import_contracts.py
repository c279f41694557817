"""A contract type of our own for import-linter: domains meet only through a gateway module.

import-linter's built-in contracts need every protected module listed by hand; this one
finds the domains itself (the subpackages of `container` that are not `platform`), so a
new domain is covered the day it is created. Configured in `pyproject.toml`.
"""

from __future__ import annotations

from importlinter import Contract, ContractCheck, fields, output


class GatewayContract(Contract):
    """Each domain imports another only as `domain` or `domain.<gateway>`."""

    type_name = "gateway"

    container = fields.StringField()
    gateway = fields.StringField()
    platform = fields.ListField(subfield=fields.StringField(), required=False)

    def _domains(self, graph) -> list[str]:
        platform = {f"{self.container}.{name}" for name in (self.platform or [])}
        children = graph.find_children(str(self.container))
        return sorted(m for m in children if graph.find_children(m) and m not in platform)

    def check(self, graph, verbose: bool) -> ContractCheck:
        """Every direct import from one domain into another must target its gateway."""
        domains = self._domains(graph)
        broken = []
        for domain in domains:
            for importer in sorted({domain} | graph.find_descendants(domain)):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    target = next((d for d in domains if imported.startswith(f"{d}.")), None)
                    if target in (None, domain) or imported == f"{target}.{self.gateway}":
                        continue
                    details = graph.get_import_details(importer=importer, imported=imported)
                    lines = sorted({detail["line_number"] for detail in details})
                    broken.append((importer, imported, lines))
        return ContractCheck(kept=not broken, metadata={"broken": broken, "domains": domains})

    def render_broken_contract(self, check: ContractCheck) -> None:
        """One line per import that bypasses a gateway."""
        for importer, imported, lines in check.metadata["broken"]:
            where = ", ".join(f"l.{line}" for line in lines)
            output.print_error(f"{importer} -> {imported} ({where})")
        output.new_line()
        output.print(f"Import the other domain's `{self.gateway}` module instead.")
