# The stream-mode reader of the relay (relay/stream_id, stream_source,
# resume): an internal static library, kept apart from the relay's own target
# so each can be built and tested alone. Included at the end of the top
# CMakeLists.txt, after the tools and tests it links into exist.
pkg_check_modules(MAE_STREAM_LIBEVENT REQUIRED IMPORTED_TARGET libevent)

add_library(mae_stream_reader STATIC
  relay/stream_id.c
  relay/stream_source.c
  relay/resume.c
)
target_include_directories(mae_stream_reader PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(mae_stream_reader PUBLIC mailagent-events-static
  PkgConfig::HIREDIS PkgConfig::MAE_STREAM_LIBEVENT)

# `events tail --stream` parses ids and follows the stream.
if(TARGET mailagent)
  target_link_libraries(mailagent PRIVATE mae_stream_reader)
endif()
foreach(t test_stream_id test_stream_parse test_resume test_resume_handoff test_it_stream_reader
         test_it_tail_stream)
  if(TARGET ${t})
    target_link_libraries(${t} PRIVATE mae_stream_reader)
  endif()
endforeach()
# The hand-off test plays the stream source itself.
if(TARGET test_resume_handoff)
  target_link_options(test_resume_handoff PRIVATE
    -Wl,--wrap=mae__stream_source_range -Wl,--wrap=mae__stream_source_bounds
    -Wl,--wrap=mae__stream_req_cancel -Wl,--wrap=mae__stream_source_position
    -Wl,--wrap=mae__stream_source_epoch -Wl,--wrap=mae__stream_source_base)
endif()
if(TARGET test_it_tail_stream AND TARGET mailagent)
  add_dependencies(test_it_tail_stream mailagent)
endif()
# The connection test plays the stream source too.
if(TARGET test_relay_client)
  target_link_options(test_relay_client PRIVATE
    -Wl,--wrap=mae__stream_source_bounds -Wl,--wrap=mae__stream_source_position
    -Wl,--wrap=mae__stream_source_epoch)
endif()
