"""SR sources of FGR data: real SR models, classical resizes and synthetic artifact families, in one registry.

``build_sr_source(opt)`` builds any registered type; importing this package registers the built-in ones.
"""
from finpercep_basicsr.fgr.sources import artifact_sources, sr_sources  # noqa: F401  (register the built-in types)
from finpercep_basicsr.fgr.sources.registry import SR_SOURCE_TYPES, SRSource, build_sr_source, register_sr_source

__all__ = ['SR_SOURCE_TYPES', 'SRSource', 'build_sr_source', 'register_sr_source']
