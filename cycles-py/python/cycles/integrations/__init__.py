"""Agent-framework integrations: each wraps the framework's own tool type so that invoking a
tool goes through ``reserve`` -> run -> ``settle`` (by how the tool ended: returned,
raised, interrupted; the core decides what each costs).

- ``cycles.integrations.langchain``: LangChain tools (``langchain-core``).
- ``cycles.integrations.openai_agents``: OpenAI Agents SDK function tools (``openai-agents``).

The framework packages are optional dependencies: import the submodule you need.
"""
